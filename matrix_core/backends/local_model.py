"""A chat model on CPU with transformers: many chat requests answered by one batched ``generate``.

Imported only inside the model actor (see :mod:`matrix_core.backends.local`), since it imports torch.
Sampling happens per row in :class:`_RowSampler`, so requests with different temperatures, top_p and seeds share
one batch: ``generate`` itself runs greedy and takes the token the sampler leaves as the only candidate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This module runs in the model actor's own process. The model is a local file: transformers must never reach for
# a hub at run time; and the GGUF loader's progress bars would only litter the actor's log.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import jinja2
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, StoppingCriteria

from matrix_core.backends.base import ChatResponse, Sampling, Usage
from matrix_core.errors import MatrixError

NUCLEUS_CANDIDATES = 1024
"""Tokens searched first for a top_p nucleus (see :class:`_RowSampler`)."""
DEFAULT_TEMPERATURE = 1.0
"""Temperature when a call sets none: OpenAI's default, and vLLM's for a model (such as SmolLM2) whose generation
config sets none."""


@dataclass
class _Prompt:
    """One request's encoded prompt and its resolved sampling."""

    ids: list[int]
    sampling: Sampling
    max_tokens: int


@dataclass
class _End:
    """Where and why one row stopped: tokens generated (the end-of-turn token included) and the cut for a stop."""

    tokens: int
    reason: str
    cut: int | None = None


class ChatModel:
    """A causal LM and its tokenizer, loaded from a GGUF file or a transformers model folder on local disk."""

    def __init__(self, path: Path, threads: int) -> None:
        torch.set_num_threads(threads)
        options: dict[str, Any] = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
        source = path.parent if path.suffix == ".gguf" else path
        self.tokenizer = AutoTokenizer.from_pretrained(source, **options)
        self.model = AutoModelForCausalLM.from_pretrained(source, **options).eval()
        self.tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        self.eos = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None}
        self.context = self.model.config.max_position_embeddings
        self._rng = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)

    def generate(self, requests: Sequence[tuple[list[dict[str, Any]], Sampling]]) -> list[ChatResponse | MatrixError]:
        """Answer every request with one ``generate`` call; a request that cannot run gets its error instead."""
        prompts: list[_Prompt | MatrixError] = [self._encode(messages, sampling) for messages, sampling in requests]
        valid = [prompt for prompt in prompts if isinstance(prompt, _Prompt)]
        answers = iter(self._generate(valid) if valid else [])
        return [prompt if isinstance(prompt, MatrixError) else next(answers) for prompt in prompts]

    def _encode(self, messages: list[dict[str, Any]], sampling: Sampling) -> _Prompt | MatrixError:
        """The request's prompt, or its mistake: checked here so that a bad request fails alone, not its batch."""
        for name, value, least in (("n", sampling.n, 1), ("max_tokens", sampling.max_tokens, 1)):
            if value is not None and value < least:
                return MatrixError(f"backend 'local': sampling {name} must be at least {least}, got {value}")
        if _temperature(sampling) < 0:
            return MatrixError(
                f"backend 'local': sampling temperature must not be negative, got {sampling.temperature}"
            )
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except (jinja2.TemplateError, TypeError, ValueError) as error:  # messages the template cannot render
            return MatrixError(f"backend 'local': the chat template rejected the messages: {error}")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.context - len(ids)
        if room < 1:
            return MatrixError(f"backend 'local': a prompt of {len(ids)} tokens leaves no room in the model's context")
        return _Prompt(ids, sampling, room if sampling.max_tokens is None else min(sampling.max_tokens, room))

    def _generate(self, prompts: list[_Prompt]) -> list[ChatResponse]:
        rows = [prompt for prompt in prompts for _ in range(prompt.sampling.n)]
        batch = self.tokenizer.pad({"input_ids": [row.ids for row in rows]}, return_tensors="pt")
        width = batch["input_ids"].shape[1]
        sampler = _RowSampler(rows, self._rng)
        ends = _RowEnds(rows, width, self.eos, self.tokenizer)
        output = self.model.generate(
            **batch,
            max_new_tokens=max(row.max_tokens for row in rows),
            do_sample=False,
            logits_processor=[sampler],
            stopping_criteria=[ends],
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts, reasons, counts = [], [], []
        for index in range(len(rows)):
            end = ends.ends.get(index) or _End(output.shape[1] - width, "length")
            text = self.tokenizer.decode(output[index, width : width + end.tokens], skip_special_tokens=True)
            texts.append(text if end.cut is None else text[: end.cut])
            reasons.append(end.reason)
            counts.append(end.tokens)
        responses, start = [], 0
        for prompt in prompts:
            stop = start + prompt.sampling.n
            usage = Usage(prompt_tokens=len(prompt.ids), completion_tokens=sum(counts[start:stop]))
            responses.append(ChatResponse(texts[start], reasons[start], usage, choices=texts[start:stop]))
            start = stop
        return responses


class _RowSampler(LogitsProcessor):
    """Sample each row's next token with its own temperature, top_p and random generator (seeded per request),
    leaving it as the row's only finite score; rows at temperature 0 are left for ``generate``'s argmax.

    Sampling is by inverse CDF, one uniform draw per row, and the nucleus is sought among the most likely
    :data:`NUCLEUS_CANDIDATES` tokens unless they hold less than top_p: per-row ``torch.multinomial`` and a full sort
    of the vocabulary cost more than a forward pass of this small model at batch 16 (measured: 42 ms against 83 ms).
    """

    def __init__(self, rows: list[_Prompt], rng: torch.Generator) -> None:
        self.rows = [index for index, row in enumerate(rows) if _temperature(row.sampling) > 0]
        self.temperatures = torch.tensor([_temperature(rows[index].sampling) for index in self.rows])
        top_p = torch.tensor([rows[index].sampling.top_p or 1.0 for index in self.rows])
        self.nucleus = top_p < 1
        self.top_p = top_p[self.nucleus]
        # One generator per request (its n rows are the same object, drawing from it in turn); unseeded ones share.
        generators: dict[int, torch.Generator] = {}
        for index in self.rows:
            seed = rows[index].sampling.seed
            if id(rows[index]) not in generators:
                generators[id(rows[index])] = rng if seed is None else torch.Generator().manual_seed(seed)
        self.generators = [generators[id(rows[index])] for index in self.rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.rows:
            return scores
        probs = torch.softmax(scores[self.rows] / self.temperatures[:, None], dim=-1)
        draws = torch.cat([torch.rand(1, generator=rng) for rng in self.generators])
        tokens = torch.empty(len(self.rows), dtype=torch.long)
        whole = ~self.nucleus
        if whole.any():
            tokens[whole] = _pick(probs[whole], draws[whole])
        if self.nucleus.any():
            candidates = probs[self.nucleus]
            top, order = candidates.topk(min(NUCLEUS_CANDIDATES, candidates.shape[-1]), dim=-1)
            if bool((top.sum(dim=-1) < self.top_p).any()):
                top, order = candidates.sort(dim=-1, descending=True)
            # Keep the smallest set of most likely tokens whose mass reaches top_p (the first one always).
            top[top.cumsum(dim=-1) - top > self.top_p[:, None]] = 0
            tokens[self.nucleus] = order.gather(1, _pick(top, draws[self.nucleus])[:, None]).squeeze(1)
        chosen = torch.full((len(self.rows), scores.shape[1]), -torch.inf)
        chosen.scatter_(1, tokens[:, None], 0.0)
        scores[self.rows] = chosen
        return scores


def _pick(weights: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Per row, the index where the draw (in [0, 1)) falls in the cumulative weights: a sample from the weights."""
    cumulative = weights.cumsum(dim=-1)
    picks = torch.searchsorted(cumulative, (draws * cumulative[:, -1])[:, None], right=True).squeeze(1)
    return picks.clamp(max=weights.shape[-1] - 1)


class _RowEnds(StoppingCriteria):
    """Stop each row at its own end: the end-of-turn token, one of its stop strings, or its ``max_tokens``;
    remembers where and why, since ``generate`` pads finished rows until the longest one ends."""

    def __init__(self, rows: list[_Prompt], width: int, eos: set[int], tokenizer: Any) -> None:
        self.rows = rows
        self.width = width
        self.eos = eos
        self.tokenizer = tokenizer
        self.ends: dict[int, _End] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        length = input_ids.shape[1] - self.width
        for index, row in enumerate(self.rows):
            if index in self.ends:
                continue
            if int(input_ids[index, -1]) in self.eos:
                self.ends[index] = _End(length, "stop")
                continue
            if row.sampling.stop:
                text = self.tokenizer.decode(input_ids[index, self.width :], skip_special_tokens=True)
                cut = min((found for stop in row.sampling.stop if (found := text.find(stop)) >= 0), default=None)
                if cut is not None:
                    self.ends[index] = _End(length, "stop", cut)
                    continue
            if length >= row.max_tokens:
                self.ends[index] = _End(length, "length")
        done = torch.zeros(len(self.rows), dtype=torch.bool)
        done[list(self.ends)] = True
        return done


def _temperature(sampling: Sampling) -> float:
    return DEFAULT_TEMPERATURE if sampling.temperature is None else sampling.temperature
