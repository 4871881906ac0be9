"""Store-recall, the LSNN working-memory task (ALGORITHMS.md §10.3).

A trial is a sequence of ``n_characters`` characters of ``character_ms`` each. A character is a bit ("0" or "1"),
a store command or a recall command; each of the 4 symbols has its own group of ``n_per_group`` input neurons that
fires at ``rate_hz`` while the symbol is shown. The network must report, during every recall character, the bit
that followed the most recent store command. Classes: the bit (0 or 1).

References: Bellec et al. 2018, NeurIPS 31, arXiv:1803.09574 (LSNN); Bellec et al. 2020, Nat. Commun. 11:3625,
doi:10.1038/s41467-020-17236-y (e-prop; the task as in the older e-prop commit ``3ea9830``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from spikelearn.tasks.base import Task, Trials, check, ms_to_steps, poisson_spikes

__all__ = ["BIT0", "BIT1", "RECALL", "STORE", "StoreRecall"]

BIT0, BIT1, STORE, RECALL = 0, 1, 2, 3  # character codes; also the index of each symbol's input group
_ENCODINGS = ("bernoulli", "poisson")
_MAX_ROUNDS = 10_000  # rejection-sampling rounds before giving up (valid trials would be vanishingly rare)


@dataclass(frozen=True)
class StoreRecall(Task):
    """Store-recall task (ALGORITHMS.md §10.3); defaults are the published parameters.

    Inputs: ``4 n_per_group`` neurons (default 100 = 4 × 25) in groups, in order: bit "0", bit "1", store, recall.
    A group fires at ``rate_hz`` (default 50 Hz) during the characters that show its symbol and is silent
    otherwise (no background). ``encoding="bernoulli"`` (default, as the source) draws per-step spikes with
    ``p = rate_hz·dt_ms/1000``; ``"poisson"`` draws Poisson counts with that mean (ALGORITHMS.md §11 item 3).
    ``T = n_characters · character_ms / dt_ms`` (default 12 × 200 = 2400 steps).

    Character sequence (the source's generator): start waiting for a store; at each character, with probability
    ``p_store_recall`` (default 1/(1 + 6), expected delay 6 characters) the awaited command appears (a store
    while waiting for a store, after which a recall is awaited, and vice versa), otherwise a uniformly random bit.
    Sequences that break the validity constraints are redrawn (rejection sampling), so every trial satisfies:

    * stores and recalls alternate, starting with a store and ending with a recall (at least one of each);
    * every store is followed by a bit character (so no store is last and no recall directly follows a store).

    §10.3 summarises these as "a bit follows every store, stores and recalls alternate". We apply the source's
    complete ``validity_test``, whose remaining rules make the summary precise: the first command must be a store
    (otherwise a recall has no stored bit to report) and the last a recall (every store is recalled, and every
    trial has at least one recall character, so it contributes to the loss). Because of the redraws the command
    frequency in the returned trials is not exactly ``p_store_recall``.

    Display: during a store character the bit channels also show the bit of the next character (the store group
    and that bit's group both fire); independently for each store, with probability ``p_flip`` (default 0.5) the
    bit *shown* in the character after the store is inverted. The stored bit (the target) is the true one, i.e. the
    one shown during the store character, so the value must be captured at the store time. Recall characters
    show only the recall group.

    Target and mask: during a recall character, every step's label is the bit that followed the most recent store,
    and the mask is 1 on exactly the steps of recall characters (CE on every ms of them). Elsewhere the mask is 0;
    there the label (which must still be a valid class) is the bit currently held in memory (0 before the first
    store) and never counts. Loss: masked CE averaged over the counted steps. Accuracy: for each recall character,
    the argmax of the logits averaged over its masked steps (the source scores the per-character averaged output),
    compared with its label; the fraction of correct recall characters over the batch.

    ``info`` (batch first, per character): ``chars (B, L)`` int64 codes (0/1 bit, 2 store, 3 recall) before the
    display transformation; ``shown_bit (B, L)`` int64, the bit whose group fires (-1: none); ``flipped (B, L)``
    bool, the shown bit of this character is inverted; ``memory (B, L)`` int64, the bit stored at this character
    (-1 before the first store).
    """

    kind: ClassVar[str] = "classification"

    n_characters: int = 12  # characters per trial (L)
    character_ms: float = 200.0  # duration of one character
    n_per_group: int = 25  # input neurons per symbol group (4 groups)
    rate_hz: float = 50.0  # rate of a group while its symbol is shown
    p_store_recall: float = 1.0 / 7.0  # per-character probability of the awaited command, 1/(1 + expected delay)
    p_flip: float = 0.5  # probability that the bit shown after a store is inverted
    dt_ms: float = 1.0
    input_noise_std: float = 0.0
    encoding: str = "bernoulli"  # input spikes: "bernoulli" (source) | "poisson" counts

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return 4 * self.n_per_group

    @property
    def n_out(self) -> int:
        return 2

    @property
    def steps_per_character(self) -> int:
        return ms_to_steps(self.character_ms, self.dt_ms, "character_ms", allow_zero=False)

    @property
    def n_steps(self) -> int:
        return self.n_characters * self.steps_per_character

    def _validate(self) -> None:
        check(
            isinstance(self.n_characters, int) and not isinstance(self.n_characters, bool) and self.n_characters >= 3,
            "n_characters",
            "be an int >= 3 (a store, its bit and a recall)",
            self.n_characters,
        )
        check(
            isinstance(self.n_per_group, int) and not isinstance(self.n_per_group, bool) and self.n_per_group >= 1,
            "n_per_group",
            "be an int >= 1",
            self.n_per_group,
        )
        ms_to_steps(self.character_ms, self.dt_ms, "character_ms", allow_zero=False)
        check(self.encoding in _ENCODINGS, "encoding", f"be one of {_ENCODINGS}", self.encoding)
        check(math.isfinite(self.rate_hz) and self.rate_hz >= 0, "rate_hz", "be >= 0 Hz", self.rate_hz)
        if self.encoding == "bernoulli":
            check(self.rate_hz * self.dt_ms / 1000.0 <= 1.0, "rate_hz", "satisfy rate_hz * dt_ms / 1000 <= 1",
                  self.rate_hz)
        check(0.0 < self.p_store_recall < 1.0, "p_store_recall", "lie in (0, 1)", self.p_store_recall)
        check(0.0 <= self.p_flip <= 1.0, "p_flip", "lie in [0, 1]", self.p_flip)

    # -- generation --------------------------------------------------------------------------------------------
    @staticmethod
    def _is_valid(chars: Tensor) -> Tensor:
        """``(B,)`` bool: each sequence ``chars (B, L)`` satisfies the validity constraints."""
        is_store, is_recall = chars == STORE, chars == RECALL
        # alternation S R S R ... S R: stores minus recalls so far stays in {0, 1} and ends at 0
        d = is_store.long().cumsum(1) - is_recall.long().cumsum(1)
        alternate = ((d == 0) | (d == 1)).all(1) & (d[:, -1] == 0) & is_store.any(1)
        # a bit character after every store
        next_is_bit = torch.zeros_like(is_store)
        next_is_bit[:, :-1] = chars[:, 1:] <= BIT1
        return alternate & ~(is_store & ~next_is_bit).any(1)

    def _draw_chars(self, batch_size: int, generator: torch.Generator) -> Tensor:
        dev = generator.device
        L = self.n_characters
        chars = torch.empty(batch_size, L, dtype=torch.int64, device=dev)
        todo = torch.arange(batch_size, device=dev)  # trials still without a valid sequence
        for _ in range(_MAX_ROUNDS):
            n = todo.numel()
            cand = torch.randint(0, 2, (n, L), generator=generator, device=dev)
            u = torch.rand(n, L, generator=generator, dtype=torch.float64, device=dev)
            awaiting_store = torch.ones(n, dtype=torch.bool, device=dev)
            for t in range(L):
                command = u[:, t] < self.p_store_recall
                cand[:, t] = torch.where(command, torch.where(awaiting_store, STORE, RECALL), cand[:, t])
                awaiting_store = awaiting_store ^ command
            ok = self._is_valid(cand)
            chars[todo[ok]] = cand[ok]
            todo = todo[~ok]
            if todo.numel() == 0:
                return chars
        raise RuntimeError(
            f"no valid store-recall sequence after {_MAX_ROUNDS} rounds of redraws; increase n_characters or "
            f"move p_store_recall (={self.p_store_recall}) away from 0 and 1"
        )

    def _generate(self, batch_size: int, generator: torch.Generator) -> Trials:
        dev = generator.device
        B, L, S, G = batch_size, self.n_characters, self.steps_per_character, self.n_per_group
        chars = self._draw_chars(B, generator)  # (B, L)
        is_store, is_recall = chars == STORE, chars == RECALL
        after_store = torch.zeros_like(is_store)
        after_store[:, 1:] = is_store[:, :-1]
        u_flip = torch.rand(B, L, generator=generator, dtype=torch.float64, device=dev)
        flipped = after_store & (u_flip < self.p_flip)

        # what the bit channels show: a bit character its (possibly inverted) bit, a store the next (true) bit
        next_char = torch.full_like(chars, -1)
        next_char[:, :-1] = chars[:, 1:]
        shown_bit = torch.where(chars <= BIT1, chars ^ flipped.long(), torch.full_like(chars, -1))
        shown_bit = torch.where(is_store, next_char, shown_bit)
        on = torch.stack([shown_bit == BIT0, shown_bit == BIT1, is_store, is_recall], -1)  # (B, L, 4)

        # bit held in memory at each character: from a store on, the bit that follows it
        memory = torch.full_like(chars, -1)
        held = torch.full((B,), -1, dtype=torch.int64, device=dev)
        for t in range(L):
            held = torch.where(is_store[:, t], next_char[:, t], held)
            memory[:, t] = held

        def per_step(v: Tensor) -> Tensor:  # (B, L, ...) -> (T, B, ...)
            return v.repeat_interleave(S, dim=1).transpose(0, 1)

        rate = per_step(on).repeat_interleave(G, dim=-1).to(torch.float64) * self.rate_hz  # (T, B, n_in)
        x = poisson_spikes(rate, self.dt_ms, generator, counts=self.encoding == "poisson")
        y = per_step(memory.clamp_min(0))  # (T, B)
        mask = per_step(is_recall).to(torch.float64)  # (T, B)
        info = {"chars": chars, "shown_bit": shown_bit, "flipped": flipped, "memory": memory}
        return Trials(x, y.contiguous(), mask.contiguous(), info)

    # -- scoring -----------------------------------------------------------------------------------------------
    def accuracy(self, y_hat: Tensor, y: Tensor, mask: Tensor) -> float:
        """Fraction of recall characters decided correctly.

        Per character (``steps_per_character`` consecutive steps) that holds masked steps: argmax of the logits
        ``y_hat (T, B, 2)`` averaged over its masked steps, compared with the character's label ``y`` (constant
        within a character). Pooled over characters and trials.
        """
        T, B = mask.shape
        if T != self.n_steps or y_hat.shape[:2] != (T, B) or y.shape != (T, B):
            raise ValueError(
                f"y_hat, y and mask must have {self.n_steps} steps and matching batch sizes, got y_hat "
                f"{tuple(y_hat.shape)}, y {tuple(y.shape)}, mask {tuple(mask.shape)}"
            )
        L, S = self.n_characters, self.steps_per_character
        m = mask.to(y_hat.dtype).reshape(L, S, B)
        counted = m.sum(1) > 0  # (L, B)
        mean_logits = (m[..., None] * y_hat.reshape(L, S, B, -1)).sum(1) / m.sum(1).clamp_min(1.0)[..., None]
        label = y.reshape(L, S, B)[:, 0]  # (L, B)
        correct = (mean_logits.argmax(-1) == label) & counted
        return float(correct.sum().to(torch.float64) / counted.sum().to(torch.float64))
