

def test_bench_eval_and_trajectories_cut_by_one_rule():
    import numpy as np

    from greencode.eval.cut import context_bounds, cut_file
    from train.agent.trajectories import context_range

    ids = list(range(1000))
    start, cut = context_bounds(len(ids), 0.2, 150)
    assert (start, cut) == (50, 200) and cut_file(ids, 0.2, 150, 15) == (ids[50:200], ids[200:215])
    share = np.random.default_rng(4).uniform(0.2, 0.6)
    assert context_range(len(ids), np.random.default_rng(4), max_tokens=150) == context_bounds(len(ids), share, 150)
