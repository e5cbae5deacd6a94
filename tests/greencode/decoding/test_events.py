"""greencode/decoding/events.py: the one end-of-line cut and the one set of a completion's figures."""

import pytest

from greencode.decoding.events import CompletionSummary, Figures, TokenEvent, eol_cut


def _event(index, exit_layer, joules, seconds=0.5):
    return TokenEvent(index, 100 + index, "x", exit_layer, exit_layer, 12, None, seconds, joules, "estimate",
                      1.0, "fixed:4")


@pytest.mark.parametrize("text, cut", [
    ("x = 1\ny", 5), ("\n\n    return x\nnext", 14), ("no newline", None), ("\n\n", None), ("", None),
])
def test_eol_cut_ends_at_the_first_newline_after_content(text, cut):
    assert eol_cut(text) == cut


def test_figures_fold_tokens_and_completions_alike():
    live = Figures(12)
    events = [_event(0, 12, 1.0, seconds=9.0), _event(1, 4, 0.4), _event(2, 4, 0.4), _event(3, 6, 0.5)]
    for event in events:
        live.add(event)
    assert live.tokens == 4 and live.decode_tokens == 3
    assert live.tokens_per_s == pytest.approx(3 / 1.5)  # the first token's (prefill) time is not decode time
    assert live.joules_saved == pytest.approx(4.0 - 2.3) and live.joules_saved_frac == pytest.approx(1.7 / 4)
    assert live.mean_exit_layer == pytest.approx(26 / 4)
    assert live.layers_skipped_frac == pytest.approx(1 - 26 / 48)
    summed = Figures(12)
    summed.add_completion(4, 1.5, 2.3, 4.0, [12, 4, 4, 6], "estimate")
    assert (summed.tokens_per_s, summed.joules_saved, summed.layers_skipped_frac) == pytest.approx(
        (live.tokens_per_s, live.joules_saved, live.layers_skipped_frac))


def test_a_summary_reads_the_same_figures_and_keeps_a_loss_negative():
    events = [_event(0, 12, 1.0), _event(1, 4, 1.5)]  # the exit cost more than full depth would have
    summary = CompletionSummary.of(events, 12, text="xx", prompt_tokens=3, dropped_prompt_tokens=0, seconds=0.5,
                                   prefill_seconds=0.1, energy_source="estimate", stop_reason="length")
    assert summary.joules == 2.5 and summary.full_depth_joules == 2.0 and summary.joules_saved == pytest.approx(-0.5)
    assert summary.mean_exit_layer == 8 and summary.exit_layers == [12, 4] and summary.tokens_per_s == 2.0
