"""EarlyExitEnv: replays a trajectory cache as the paper's early-exit MDP (IV-A..F). No LLM runs here.

State: the observation at the current exit point of the current token (what `agent:T` sees).
Actions: 0 continue (go to the next exit point), 1 exit (the token is done; the next observation is
the next token's first exit point). Continuing at the last exit point reaches the final layer, which
ends the token as an exit there. An episode is one sample's tokens.

Rewards (eq. 2 and 3). Positions are exit-point indices 0..E-1 and E for the final layer; l_opt is the
first exit point whose top-1 equals the final layer's (E when none does). Distances are divided by E,
the largest possible one, so every penalty lies in [-1, 0]:

  exit     +1                            top-1 correct and l_curr == l_opt          (optimal_exit)
           -(l_curr - l_opt)/E * alpha   top-1 correct, later than l_opt           (late_exit)
           -(l_opt - l_curr)/E * beta    top-1 wrong, earlier than l_opt           (early_exit)
           -epsilon                      top-1 wrong, later than l_opt             (wrong_late_exit)
  continue +1                            l_curr < l_opt                             (optimal_continue)
           -(l_curr + 1 - l_opt)/E * gamma  otherwise                               (late_continue)

The continue that reaches the final layer is scored as the exit it causes: eq. 2 at l_curr = E,
where the prediction is y by definition (+1 when l_opt = E, else a late exit).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from greencode.config import check_reward
from greencode.errors import GreencodeError
from train.agent.trajectories import TrajectoryCache

CONTINUE, EXIT = 0, 1
EXIT_CASES = ("optimal_exit", "late_exit", "early_exit", "wrong_late_exit")
CONTINUE_CASES = ("optimal_continue", "late_continue")


def exit_reward(curr, opt, correct, num_exits: int, reward) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 2 -> (reward, index into EXIT_CASES); works elementwise on scalars or arrays."""
    curr, opt, correct = np.asarray(curr), np.asarray(opt), np.asarray(correct, dtype=bool)
    if np.any(correct & (curr < opt)):
        raise ValueError("inconsistent trajectory: a correct exit point before l_opt")
    scale = 1.0 / num_exits
    case = np.select([correct & (curr == opt), correct, curr < opt], [0, 1, 2], 3)
    value = np.choose(case, [np.ones(curr.shape), -(curr - opt) * scale * reward.alpha,
                             -(opt - curr) * scale * reward.beta, np.full(curr.shape, -reward.epsilon)])
    return value.astype(np.float64), case


def continue_reward(curr, opt, num_exits: int, reward) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 3 -> (reward, index into CONTINUE_CASES), with l_next = l_curr + 1."""
    curr, opt = np.asarray(curr), np.asarray(opt)
    early = curr < opt
    value = np.where(early, 1.0, -(curr + 1 - opt) * (1.0 / num_exits) * reward.gamma)
    return value.astype(np.float64), np.where(early, 0, 1)


def position_feature_value(position: int, num_exits: int) -> float:
    """The optional extra feature: the exit point's index scaled to [0, 1], as greencode.exits.agent.agent_observation
    appends it at inference (a test holds the two equal)."""
    return position / max(1, num_exits - 1)


class EarlyExitEnv(gym.Env):
    """Replays a TrajectoryCache; reset draws one sample uniformly with self.np_random."""

    metadata = {"render_modes": []}

    def __init__(self, cache: TrajectoryCache, reward, position_feature: bool = False):
        check_reward(reward)
        if cache.num_tokens == 0:
            raise GreencodeError("the trajectory cache is empty (0 tokens); rebuild it with "
                                 "`greencode train trajectories --force`")
        self.cache, self.reward_config, self.position_feature = cache, reward, position_feature
        self._obs_table = cache.observations
        self._num_exits = num_exits = cache.num_exits
        self._layers = [*cache.exit_points, cache.num_layers]
        self._opt = cache.optimal_positions
        # Every reward the replay can hand out, computed once: step() only looks them up.
        positions = np.broadcast_to(np.arange(num_exits), cache.exit_top1.shape)
        opt = self._opt[:, None]
        exits = exit_reward(positions, opt, cache.correct, num_exits, reward)  # (N, E) each
        continues = continue_reward(positions, opt, num_exits, reward)
        finals = exit_reward(num_exits, self._opt, True, num_exits, reward)  # (N,): reaching layer L
        # Python lists: indexing them is several times faster than numpy scalars.
        self._exit_r, self._exit_case = (a.tolist() for a in exits)
        self._cont_r, self._cont_case = (a.tolist() for a in continues)
        self._final_r, self._final_case = (a.tolist() for a in finals)
        self._opt = self._opt.tolist()
        self._bounds = cache.sample_bounds()
        dim = cache.obs_dim + (1 if position_feature else 0)
        bound = np.finfo(np.float32).max  # hidden states are unbounded; finite for the checkers
        self.observation_space = gym.spaces.Box(-bound, bound, shape=(dim,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._token = self._stop = self._position = 0

    def _get_obs(self) -> np.ndarray:
        token = min(self._token, self._stop - 1)
        if not self.position_feature:
            return self._obs_table[token, self._position].copy()
        return np.append(self._obs_table[token, self._position],
                         np.float32(position_feature_value(self._position, self._num_exits)))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sample = (options or {}).get("sample")
        if sample is None:
            sample = int(self.np_random.integers(len(self._bounds)))
        self._token, self._stop = self._bounds[sample]
        self._position = 0
        return self._get_obs(), {"sample": sample, "tokens": self._stop - self._token}

    def step(self, action):
        token, position = self._token, self._position
        if action == EXIT:
            reward, exit_position = self._exit_r[token][position], position
            case = EXIT_CASES[self._exit_case[token][position]]
        elif position == self._num_exits - 1:  # continuing at the last exit point reaches L: an exit there
            reward, exit_position = self._final_r[token], self._num_exits
            case = EXIT_CASES[self._final_case[token]]
        else:
            reward, exit_position = self._cont_r[token][position], None
            case = CONTINUE_CASES[self._cont_case[token][position]]
        # Eq. 4: r_c = 0 on an exit, r_e = 0 on a continue.
        info = {"reward_exit": reward if exit_position is not None else 0.0,
                "reward_continue": reward if exit_position is None else 0.0}
        info.update(case=case, position=position, optimal_position=self._opt[token], token=token)
        if exit_position is None:
            self._position += 1
        else:
            info["exit_position"], info["exit_layer"] = exit_position, self._layers[exit_position]
            self._token, self._position = token + 1, 0
        terminated = self._token >= self._stop
        return self._get_obs(), float(reward), terminated, False, info
