"""Fine-tuning and validation: the labelled images of a run (:mod:`.datasets`, :mod:`.batches`), the
recipe (:mod:`.recipe`: parameter groups, schedule, mixup, EMA), the loop (:mod:`.loop`, set up by
:mod:`.setup`), the run's files (:mod:`.checkpoints`, :mod:`.metrics`) and validation with per-class
results (:mod:`.validate`).

Typical use::

    from fastvit.train import TrainConfig, Trainer

    summary = Trainer(TrainConfig(out="runs/pets", data="pets/", epochs=10)).fit()
    summary = Trainer(TrainConfig.of_run(Path("runs/pets")), resume=True).fit()   # after an interruption
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "Trainer"]


def __getattr__(name: str):
    if name == "Trainer":  # imported on first use: the command line reads TrainConfig's defaults to build its parser
        from .loop import Trainer

        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
