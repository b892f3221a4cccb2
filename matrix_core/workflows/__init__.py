"""Built-in workflows: their orchestrators, agents and default configs."""
