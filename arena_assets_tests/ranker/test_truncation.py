"""Token-budget middle cut: budgets, caps, water-filling and exact outputs."""

from __future__ import annotations

import itertools

import pytest

from arena_assets.ranker.truncation import (
    FieldBudgets,
    field_budgets,
    middle_cut,
    truncate_fields,
)

MARKER = [-1, -2]


def test_fits_keeps_every_length() -> None:
    assert field_budgets((10, 20, 30), 60) == FieldBudgets(10, 20, 30)
    assert field_budgets((10, 20, 30), 1000, rebalance=False) == FieldBudgets(10, 20, 30)


def test_all_long_fields_get_their_caps() -> None:
    # R = 100: caps 20 / 40 / 40, nothing spare to hand out.
    assert field_budgets((500, 500, 500), 100) == FieldBudgets(20, 40, 40)
    assert field_budgets((500, 500, 500), 100, rebalance=False) == FieldBudgets(20, 40, 40)


def test_caps_floor_and_never_exceed_budget() -> None:
    # R = 7: caps int(1.4)=1, int(2.8)=2, 2; rebalance hands the 2 spare tokens out.
    assert field_budgets((50, 50, 50), 7, rebalance=False) == FieldBudgets(1, 2, 2)
    assert sum(field_budgets((50, 50, 50), 7).as_tuple()) == 7


def test_without_rebalance_short_prompt_leaves_budget_unused() -> None:
    assert field_budgets((5, 300, 300), 100, rebalance=False) == FieldBudgets(5, 40, 40)


def test_rebalance_gives_short_prompt_budget_to_long_responses() -> None:
    # 15 spare tokens split 2:2 between the two responses; the odd one goes to the neediest.
    budgets = field_budgets((5, 300, 300), 100)
    assert budgets.prompt == 5
    assert sum(budgets.as_tuple()) == 100
    assert {budgets.response_a, budgets.response_b} == {47, 48}


def test_rebalance_water_fills_past_a_field_that_needs_little() -> None:
    # Caps 20/40/40; B is short (10) so 30 are spare. Prompt (weight 1) and A (weight 2) share 30:
    # prompt would get 10 but only needs 5 more, A gets 20; the 5 the prompt could not use go to A.
    assert field_budgets((25, 300, 10), 100) == FieldBudgets(25, 65, 10)


def test_rebalance_prompt_and_response_share_by_cap_weight() -> None:
    # B short (10) leaves 30 spare: prompt gets 1/3 (10), A gets 2/3 (20).
    assert field_budgets((300, 300, 10), 100) == FieldBudgets(30, 60, 10)


@pytest.mark.parametrize("rebalance", [True, False])
def test_budget_invariants_over_a_grid(rebalance: bool) -> None:
    sizes = (0, 1, 3, 17, 40, 99, 250)
    for lengths in itertools.product(sizes, repeat=3):
        for budget in (0, 5, 37, 100, 400):
            budgets = field_budgets(lengths, budget, rebalance=rebalance).as_tuple()
            assert all(0 <= b <= n for b, n in zip(budgets, lengths, strict=True))
            if sum(lengths) <= budget:
                assert budgets == lengths
            elif rebalance:
                assert sum(budgets) == budget  # water-filling leaves nothing unused
            else:
                assert sum(budgets) <= budget


def test_middle_cut_exact_tokens() -> None:
    ids = list(range(20))
    # keep 10: body 8, head round(0.75 * 8) = 6, tail 2.
    assert middle_cut(ids, 10, head_share=0.75, marker=MARKER) == [0, 1, 2, 3, 4, 5, -1, -2, 18, 19]


def test_middle_cut_unchanged_when_it_fits() -> None:
    assert middle_cut([1, 2, 3], 3, head_share=0.75, marker=MARKER) == [1, 2, 3]
    assert middle_cut([1, 2, 3], 9, head_share=0.75, marker=MARKER) == [1, 2, 3]


def test_middle_cut_length_is_exactly_keep() -> None:
    ids = list(range(100))
    for keep in range(0, 100):
        for share in (0.0, 0.5, 0.75, 1.0):
            assert len(middle_cut(ids, keep, head_share=share, marker=MARKER)) == keep


def test_middle_cut_head_only_when_marker_does_not_fit() -> None:
    assert middle_cut(list(range(10)), 2, head_share=0.75, marker=MARKER) == [0, 1]
    assert middle_cut(list(range(10)), 1, head_share=0.75, marker=MARKER) == [0]
    assert middle_cut(list(range(10)), 0, head_share=0.75, marker=MARKER) == []


def test_middle_cut_full_head_share_has_no_tail() -> None:
    assert middle_cut(list(range(10)), 5, head_share=1.0, marker=MARKER) == [0, 1, 2, -1, -2]


def test_middle_cut_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="keep"):
        middle_cut([1, 2], -1, head_share=0.5, marker=MARKER)
    with pytest.raises(ValueError, match="head_share"):
        middle_cut([1, 2], 1, head_share=1.5, marker=MARKER)


def test_truncate_fields_untouched_when_fitting() -> None:
    p, a, b = [1] * 5, [2] * 6, [3] * 7
    assert truncate_fields(p, a, b, budget=18, marker=MARKER) == (p, a, b, False)


def test_truncate_fields_matches_design_shares() -> None:
    # R = 100, all long: prompt keeps 15 + 5 around the marker (18 text tokens here, 2 marker),
    # responses 30 + 10 (38 text tokens).
    p, a, b = list(range(1000, 1300)), list(range(2000, 2300)), list(range(3000, 3300))
    tp, ta, tb, truncated = truncate_fields(p, a, b, budget=100, marker=MARKER)
    assert truncated
    assert (len(tp), len(ta), len(tb)) == (20, 40, 40)
    assert tp == [*range(1000, 1014), -1, -2, *range(1296, 1300)]  # head round(0.75 * 18) = 14, tail 4
    assert ta == [*range(2000, 2028), -1, -2, *range(2290, 2300)]  # head round(0.75 * 38) = 28, tail 10


def test_truncate_fields_keeps_short_fields_whole() -> None:
    p, a, b = [7] * 5, list(range(300)), [9] * 10
    tp, ta, tb, truncated = truncate_fields(p, a, b, budget=100, marker=MARKER)
    assert truncated
    assert (tp, tb) == (p, b)
    assert len(ta) == 85
    assert ta[:3] == [0, 1, 2] and ta[-3:] == [297, 298, 299] and ta.count(-1) == 1
