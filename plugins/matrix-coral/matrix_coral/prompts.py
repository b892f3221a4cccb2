"""The prompts of Collaborative Reasoner, word for word (typos included: they are what the paper's models saw).

Teacher and student share one collaborative system prompt per dataset (``assistant_sbs_short`` of the original's
prompt library; ``assistant_sbs`` for GPQA, as its config has it). The answer extractor has its own system prompt
and sees one turn at a time with the question.
"""

from __future__ import annotations

from collections.abc import Sequence

from matrix_coral.config import DatasetFormat
from matrix_coral.questions import LETTERS, MULTIPLE_CHOICE, Question

_COLLABORATE = (
    "You are working with a user to solve some {task_name} problems.\n\n"
    "Here is how you should proceed:\n"
    "* Starting on the problem and try to give a full solution;\n"
    "* When the user proposes a solution, look carefully at each of the step, and be precise and direct when you "
    "notice any mistake;\n"
    "* When the user raises a concern, first think about if you have actually made a mistake. Correct your mistake "
    "if you think you've made one, but stand your ground if you think it's actually correct;\n"
    "* Always stay on topic and work towards a solution to the original problem;\n"
    "* Be direct and concise during the whole communication;\n"
    "* {final_answer}"
)
_COLLABORATE_ADVANCED = (
    "You are working with an advanced user to solve some complex {task_name} problems.\n\n"
    "Here is how you should proceed:\n"
    "* Starting on the problem, first lay out a plan and ask for confirmation on the plan;\n"
    "* When the user proposes a plan, an actual solution, or a partial solution, look carefully at each of the step, "
    "and ask clarification questions if you are unsure about the correctness of a certain step;\n"
    "* When you notice an error, be precise and direct, over-politenss will not help anyone;\n"
    "* When the user asks you questions about your solution, try to unravel certain steps and explain how they work, "
    "correct your mistake if you think you've made one, but stand your ground if you think it's actually correct;\n"
    "* Always stay on topic and work towards a solution to the original problem;\n"
    "* {final_answer}"
)
_CHOICE_ANSWER = (
    'To give a final answer, do it in the format of "The correct answer is (insert answer here)", '
    'such as "The correct answer is (B)"'
)
_TASKS: dict[DatasetFormat, tuple[str, str, str]] = {
    DatasetFormat.mmlu_pro: (_COLLABORATE, "reasoning-focused question answering", _CHOICE_ANSWER),
    DatasetFormat.gpqa: (_COLLABORATE_ADVANCED, "PhD-level biology, physics, and chemistry", _CHOICE_ANSWER),
    DatasetFormat.math: (
        _COLLABORATE,
        "math",
        'To give a final answer to the question (e.g., "\\sqrt{3}"), put your answer in an LaTex box like '
        "$\\boxed{\\sqrt{3}}$",
    ),
    DatasetFormat.tom: (
        _COLLABORATE,
        "theory-of-mind reasoning",
        'Put your final answer to the question at the end as "Short Answer: {answer}"',
    ),
}

EXTRACTOR_SYSTEM_PROMPT = (
    "You are an assistant that is helping an user to identify the intention of certain responses in a "
    "conversation. More specifically, you will help extracting which answer the response is submiting as the final "
    'answer, or say "not sure yet" if it seems like there is no explict answer included in the response.\n'
)


def system_prompt(format: DatasetFormat) -> str:
    """The collaborative system prompt teacher and student share for a dataset ``format``."""
    template, task_name, final_answer = _TASKS[format]
    return template.format(task_name=task_name, final_answer=final_answer)


def opening_message(question: Question) -> str:
    """Turn 0: the student's message that opens the conversation with the question."""
    if question.format in MULTIPLE_CHOICE:
        return f'I\'m trying to solve this problem: "{question.text}"\nAnd the choices are:\n{_options(question)}'
    if question.format is DatasetFormat.math:
        return f'I\'m trying to solve this math problem: "{question.text}"'
    return (
        "I'm trying to answer this question based on the following story:\n"
        f"Story: {question.story}\nQuestion: {question.text}"
    )


def extraction_prompt(question: Question, turn: str) -> str:
    """The extractor's user message: the question, the turn to read, and the answer format to return."""
    if question.format in MULTIPLE_CHOICE:
        return (
            f"**This is the original question:**\n{question.text}\n\n\n\n"
            f"**And the options are:**\n{_options(question)}\n\n"
            f"**This is the response you need to extract answer from:**\n\n{turn}\n\n"
            '**Extract the answer in ([A-Z]) format, or say "not sure yet".**'
        )
    if question.format is DatasetFormat.math:
        return (
            f"**This is the original question:**\n{question.text}\n\n"
            f"**This is the response you need to extract answer from:**\n\n{turn}\n\n"
            '**Extract the answer in $\\boxed{}$ format, or say "not sure yet".**'
        )
    return (
        f"**This is the original story and question:**\nStory: {question.story}\nQuestion: {question.text}\n\n"
        f"**This is the response you need to extract an answer from:**\n\n{turn}\n\n"
        '**Extract the final answer which should be less than five words, or say "not sure yet".**'
    )


def chat_messages(system: str, turns: Sequence[tuple[str, str]], speaker: str) -> list[dict[str, str]]:
    """The chat ``speaker`` (teacher or student) answers: ``system``, then each ``(role, text)`` turn, its own as
    ``assistant`` and its partner's as ``user``. Turns alternate, so the last message is the partner's."""
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "assistant" if role == speaker else "user", "content": text} for role, text in turns]
    return messages


def _options(question: Question) -> str:
    return "\n".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, question.choices, strict=False))
