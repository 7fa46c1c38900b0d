"""Token-budget middle cut of the three judge-prompt fields (query, response A, response B).

Pure functions on token-id lists. With R the budget left after the fixed prompt text, a field over its cap
(query 0.2R, each response 0.4R) keeps its head and tail around a marker: 0.15R + 0.05R for the query,
0.3R + 0.1R for a response. Middle cut beat left cut on the leaderboard (0.6938 vs 0.6907).
"""

from __future__ import annotations

from dataclasses import dataclass

# Caps as shares of the field budget R, in field order (prompt, response A, response B).
PROMPT_SHARE = 0.2
RESPONSE_SHARE = 0.4
# Share of a cut field's kept tokens taken from its head: 0.15R of 0.2R and 0.3R of 0.4R.
PROMPT_HEAD_SHARE = 0.75
RESPONSE_HEAD_SHARE = 0.75


@dataclass(frozen=True)
class FieldBudgets:
    """Tokens each field may keep."""

    prompt: int
    response_a: int
    response_b: int

    def as_tuple(self) -> tuple[int, int, int]:
        """(prompt, response_a, response_b)."""
        return (self.prompt, self.response_a, self.response_b)


def _water_fill(lengths: tuple[int, int, int], alloc: list[int], spare: int) -> list[int]:
    """Hand `spare` tokens to fields still short of their length, in proportion to their caps."""
    # Integer weights 1:2:2 mirror the 0.2R:0.4R:0.4R caps and stay non-zero even when R is tiny.
    weights = (1, 2, 2)
    while spare > 0:
        hungry = [i for i in range(3) if alloc[i] < lengths[i]]
        if not hungry:
            break
        total_weight = sum(weights[i] for i in hungry)
        grants = {i: min(spare * weights[i] // total_weight, lengths[i] - alloc[i]) for i in hungry}
        if not any(grants.values()):
            # Rounding left fewer tokens than hungry fields: one each, neediest first, so the loop ends.
            for i in sorted(hungry, key=lambda i: alloc[i] - lengths[i])[:spare]:
                grants[i] = 1
        for i, grant in grants.items():
            alloc[i] += grant
            spare -= grant
    return alloc


def field_budgets(lengths: tuple[int, int, int], budget: int, *, rebalance: bool = True) -> FieldBudgets:
    """Tokens to keep per field given their `lengths` and the shared `budget` R; the sum never exceeds R.

    Fields at or under their cap keep their length; without `rebalance` longer fields get exactly their
    cap; with it, budget the short fields leave unused is water-filled into the long ones.
    """
    if budget < 0 or any(length < 0 for length in lengths):
        raise ValueError(f"budget and lengths must be non-negative, got {budget=} {lengths=}")
    if sum(lengths) <= budget:
        return FieldBudgets(*lengths)
    caps = (int(PROMPT_SHARE * budget), int(RESPONSE_SHARE * budget), int(RESPONSE_SHARE * budget))
    alloc = [min(length, cap) for length, cap in zip(lengths, caps, strict=True)]
    if rebalance:
        alloc = _water_fill(lengths, alloc, budget - sum(alloc))
    return FieldBudgets(*alloc)


def middle_cut(ids: list[int], keep: int, *, head_share: float, marker: list[int]) -> list[int]:
    """Keep exactly `keep` tokens of `ids`: a head of round(head_share * (keep - len(marker))), the marker,
    and the tail; `ids` unchanged if it already fits.

    If `keep <= len(marker)` the marker would leave no room for text, so a plain head cut `ids[:keep]` is
    returned instead (no marker).
    """
    if keep < 0:
        raise ValueError(f"keep must be non-negative, got {keep}")
    if not 0.0 <= head_share <= 1.0:
        raise ValueError(f"head_share must be in [0, 1], got {head_share}")
    if len(ids) <= keep:
        return list(ids)
    body = keep - len(marker)
    if body <= 0:
        return list(ids[:keep])
    head = round(head_share * body)
    tail = body - head
    return [*ids[:head], *marker, *ids[len(ids) - tail :]]


def truncate_fields(
    prompt_ids: list[int],
    response_a_ids: list[int],
    response_b_ids: list[int],
    *,
    budget: int,
    marker: list[int],
    rebalance: bool = True,
) -> tuple[list[int], list[int], list[int], bool]:
    """Middle-cut the three fields to fit `budget` tokens together; the last item says whether any was cut."""
    fields = (prompt_ids, response_a_ids, response_b_ids)
    lengths = (len(prompt_ids), len(response_a_ids), len(response_b_ids))
    keeps = field_budgets(lengths, budget, rebalance=rebalance).as_tuple()
    head_shares = (PROMPT_HEAD_SHARE, RESPONSE_HEAD_SHARE, RESPONSE_HEAD_SHARE)
    cut = [
        middle_cut(ids, keep, head_share=share, marker=marker)
        for ids, keep, share in zip(fields, keeps, head_shares, strict=True)
    ]
    truncated = any(keep < length for keep, length in zip(keeps, lengths, strict=True))
    return cut[0], cut[1], cut[2], truncated
