"""The D4RL dataset recipe (Fu et al. 2020, "Datasets"): five datasets from one behaviour-policy training.

- ``random``:        uniformly random actions;
- ``expert``:        the final policy, actions sampled from it (stochastic);
- ``medium``:        the first checkpoint whose evaluated return reaches
                     ``medium_fraction`` of the way from the random policy's
                     return to the expert's (1/3 by default; measured on this
                     normalized scale so negative-reward tasks work too);
- ``medium-replay``: every transition of the online replay buffer up to the
                     medium checkpoint's step (warm-up steps included);
- ``medium-expert``: the medium episodes followed by the expert episodes.

Reference scores: ``ref_min_score`` is the random policy's mean return,
``ref_max_score`` the expert's. Each dataset's Minari metadata records them,
a description of every choice, and ``dataset_kind`` (one of the five kinds:
what per-dataset settings are chosen by).
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

import minari
import numpy as np
import torch

from mbrl_core.atomic import save_json
from mbrl_core.data import local_datasets_root
from mbrl_core.minari_writer import write_minari_dataset
from mbrl_core.progress import progress_bar
from mbrl_core.seeding import make_generator, seed_everything
from workflows.collect.behaviour import BehaviourTraining, load_behaviour_policy
from workflows.collect.environment import Policy, learner_policy, run_episode, uniform_policy
from workflows.collect.settings import DATASET_KINDS, RECORD_FILE, dataset_ids, stream_seed

KIND_METADATA_KEY = "dataset_kind"
Episodes = list[dict[str, np.ndarray]]


class DatasetRecipe:
    """Turns a finished behaviour training into the five datasets; resumable dataset by dataset."""

    def __init__(self, training: BehaviourTraining) -> None:
        self.training = training
        self.config = training.config
        self.record = training.record
        self.ids = dataset_ids(self.config.name)

    # -- references and the medium checkpoint
    def set_references(self) -> None:
        record = self.record
        if "ref_min_score" in record:
            return
        space = self.training.action_space
        low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in (space.low, space.high))
        generator = make_generator(stream_seed(self.config.seed, "random"))

        def uniform(observations: torch.Tensor) -> torch.Tensor:
            return low + (high - low) * torch.rand(observations.shape[0], low.numel(), generator=generator)

        record["ref_min_score"] = self.training.evaluator(uniform).return_mean
        record["ref_max_score"] = record["checkpoints"][-1]["return_mean"]
        record["medium"] = choose_medium(
            record["checkpoints"], record["ref_min_score"], record["ref_max_score"], self.config.medium_fraction
        )
        record["warnings"] += behaviour_warnings(record, self.config.medium_fraction)

    # -- datasets
    def write_datasets(self) -> None:
        for kind in DATASET_KINDS:
            if kind in self.record["datasets"]:
                continue
            episodes, behaviour = self.episodes_for(kind, self.record["medium"]["step"])
            self.write_dataset(kind, episodes, behaviour)
            self.training.save_state()

    def episodes_for(self, kind: str, medium_step: int) -> tuple[Episodes, str]:
        config, space = self.config, self.training.action_space
        if kind == "random":
            policy = uniform_policy(space, np.random.default_rng(stream_seed(config.seed, "random")))
            return self.rollouts(kind, policy, config.random_transitions), "uniformly random actions"
        if kind in ("medium", "expert"):
            checkpoint = self.record["medium"] if kind == "medium" else self.record["checkpoints"][-1]
            seed_everything(stream_seed(config.seed, kind))  # the policy's action samples
            learner = load_behaviour_policy(self.training.directory / checkpoint["path"], self.training.device)
            transitions = config.medium_transitions if kind == "medium" else config.expert_transitions
            described = (
                f"SAC checkpoint at step {checkpoint['step']} (evaluated return {checkpoint['return_mean']:.4g}), "
                "actions sampled from the policy"
            )
            return self.rollouts(kind, learner_policy(learner, space), transitions), described
        if kind == "medium-replay":
            described = f"the online SAC replay buffer up to step {medium_step} (warm-up included)"
            return self.training.buffer.episodes(medium_step), described
        union = read_episodes(self.ids["medium"]) + read_episodes(self.ids["expert"])
        return union, "the medium episodes followed by the expert episodes"

    def rollouts(self, kind: str, policy: Policy, transitions: int) -> Episodes:
        episodes: Episodes = []
        total = 0
        quiet = not self.training.progress
        with progress_bar(total=transitions, desc=f"{kind} data", unit="step", disable=quiet) as bar:
            while total < transitions:
                episode = run_episode(
                    self.training.env, policy, stream_seed(self.config.seed, kind, len(episodes)), transitions - total
                )
                episodes.append(episode)
                total += len(episode["actions"])
                bar.update(len(episode["actions"]))
        return episodes

    def write_dataset(self, kind: str, episodes: Episodes, behaviour: str) -> None:
        dataset_id = self.ids[kind]
        shutil.rmtree(local_datasets_root() / dataset_id, ignore_errors=True)  # a write killed half-way
        transitions = int(sum(len(episode["actions"]) for episode in episodes))
        dataset = write_minari_dataset(
            dataset_id,
            episodes,
            env_id=self.config.env_id,
            ref_min_score=self.record["ref_min_score"],
            ref_max_score=self.record["ref_max_score"],
            algorithm_name=f"mbrl collect ({'uniform random' if kind == 'random' else 'SAC'})",
            description=self.describe(kind, behaviour, transitions, len(episodes)),
        )
        dataset.storage.update_metadata({KIND_METADATA_KEY: kind})
        entry = {
            "dataset_id": dataset_id,
            "transitions": transitions,
            "episodes": len(episodes),
            "behaviour": behaviour,
        }
        self.record["datasets"][kind] = entry
        save_json({**entry, "kind": kind, "collection": self.record}, local_datasets_root() / dataset_id / RECORD_FILE)

    def describe(self, kind: str, behaviour: str, transitions: int, episodes: int) -> str:
        c, medium = self.config, self.record["medium"]
        return (
            f"D4RL-style '{kind}' dataset of {c.env_id}: {transitions} transitions in {episodes} "
            f"episodes; behaviour: {behaviour}. "
            f"Behaviour policy: online SAC for {c.sac_steps} environment steps ({c.warmup_steps} "
            f"uniformly random warm-up steps, batch {c.batch_size}, "
            f"SAC settings {dataclasses.asdict(self.training.sac_config)}), seed {c.seed}, a policy checkpoint "
            f"evaluated ({c.eval_episodes} episodes, "
            f"stochastic actions) every {c.checkpoint_every} steps, kept in "
            f"{c.name}/collection/policies under the Minari datasets root. "
            f"Medium = first checkpoint reaching {c.medium_fraction:.4g} of the random-to-expert "
            f"return range: step {medium['step']} "
            f"(return {medium['return_mean']:.4g}). ref_min_score = uniformly random actions "
            f"({c.eval_episodes} episodes), "
            f"ref_max_score = the final SAC policy's evaluated return. Full record: {RECORD_FILE} beside the dataset."
        )


def choose_medium(checkpoints: list[dict[str, Any]], ref_min: float, ref_max: float, fraction: float) -> dict[str, Any]:
    """The first checkpoint whose return reaches ``ref_min + fraction (ref_max - ref_min)``.

    The final one if none does.
    """
    threshold = ref_min + fraction * (ref_max - ref_min)
    chosen = next((checkpoint for checkpoint in checkpoints if checkpoint["return_mean"] >= threshold), checkpoints[-1])
    return {**chosen, "threshold": threshold}


def behaviour_warnings(record: dict[str, Any], fraction: float) -> list[str]:
    """What makes the datasets less D4RL-like than asked: no learning, or no checkpoint near the medium level."""
    ref_min, ref_max, medium, final = (
        record["ref_min_score"],
        record["ref_max_score"],
        record["medium"],
        record["checkpoints"][-1],
    )
    found = []
    if ref_max <= ref_min:
        found.append(
            f"the final SAC policy (return {ref_max:.4g}) is no better than random ({ref_min:.4g}): "
            "train longer (--sac-steps); normalized scores of these datasets are meaningless"
        )
    if medium["step"] == final["step"]:
        found.append(
            "no checkpoint before the last reached the medium threshold: medium uses the final "
            "policy (checkpoint more often)"
        )
    elif ref_max > ref_min and (medium["return_mean"] - ref_min) / (ref_max - ref_min) > 2 * fraction:
        found.append(
            f"the medium checkpoint (step {medium['step']}, return {medium['return_mean']:.4g}) is "
            f"far above the threshold {medium['threshold']:.4g}: "
            "the policy improved between two checkpoints (checkpoint more often)"
        )
    return found


def read_episodes(dataset_id: str) -> Episodes:
    fields = ("observations", "actions", "rewards", "terminations", "truncations")
    return [
        {name: getattr(episode, name) for name in fields}
        for episode in minari.load_dataset(dataset_id).iterate_episodes()
    ]


def label_kinds(record: dict[str, Any]) -> None:
    """Add ``dataset_kind`` to the metadata of datasets written before collect recorded it."""
    for kind, entry in record.get("datasets", {}).items():
        path = local_datasets_root() / entry["dataset_id"]
        if not path.exists():
            continue
        dataset = minari.load_dataset(entry["dataset_id"])
        if KIND_METADATA_KEY not in dataset.storage.metadata:
            dataset.storage.update_metadata({KIND_METADATA_KEY: kind})
