"""A Trainer whose checkpoints are all-or-nothing and that counts the real tokens it trains on."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import Trainer

from tunewiz.core.train.collate import TOKENS_KEY

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers.trainer_pt_utils import LengthGroupedSampler

log = logging.getLogger(__name__)


class RunTrainer(Trainer):
    def __init__(self, *args: Any, fault: tuple[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fault = fault
        self.tokens_seen = 0  # real (non-padding) tokens trained on by this process
        self.padded_tokens_seen = 0  # the same with padding: what the model computed on

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        self.tokens_seen += int(inputs.pop(TOKENS_KEY, 0))
        self.padded_tokens_seen += inputs["input_ids"].numel()  # a shape: no device sync
        return super().training_step(model, inputs, *args, **kwargs)

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # Any: Trainer's Sampler, or the wrapper below, which only behaves like one.
        sampler: Any = super()._get_train_sampler(*args, **kwargs)
        if self.args.train_sampling_strategy == "group_by_length" and self.args.world_size <= 1:
            # transformers' length-grouped sampler draws from the global RNG, which a resume
            # restores to a later state: the skipped batches would not be the ones trained on.
            sampler = EpochSeededLengthSampler(sampler, seed=self.args.seed)
        return sampler

    def prediction_step(
        self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs.pop(TOKENS_KEY, None)
        return super().prediction_step(model, inputs, *args, **kwargs)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        assert self.args.output_dir is not None  # build_training_args always sets it
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        try:
            if (
                self._fault
                and self._fault[0] == "enospc"
                and self._fault[1] == self.state.global_step
            ):
                self._inject_enospc()
            super()._save_checkpoint(model, trial)
        except BaseException:
            # A half-written checkpoint must never be taken as the latest one (resume would load it).
            if self.args.should_save and folder.exists():
                log.error("saving %s failed: removing the partial checkpoint", folder.name)
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _inject_enospc(self) -> None:
        original = self._save_optimizer_and_scheduler

        # A test fault: patch this one bound method on this instance, then put it back.
        def failing(output_dir: str) -> None:
            self._save_optimizer_and_scheduler = original  # type: ignore[method-assign]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), output_dir)

        self._save_optimizer_and_scheduler = failing  # type: ignore[method-assign]


class EpochSeededLengthSampler:
    """A LengthGroupedSampler whose order depends only on (seed, epoch), so resume replays it."""

    def __init__(self, inner: LengthGroupedSampler, *, seed: int) -> None:
        import torch

        self.inner, self.seed = inner, seed
        self.inner.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.inner.generator.manual_seed(self.seed + int(epoch))

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        return iter(self.inner)
