"""Seeding so that CPU runs are reproducible."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` (index draws happen where the data lives)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
