r"""Training loop for detectors with torchvision's interface: checkpoints, logging, DDP.

The default recipe is the paper's, scaled linearly with the global batch size
:math:`B` (images per step over all processes):

.. math::

    \mathrm{lr}(t) = 0.01 \cdot \frac{B}{16} \cdot w(t) \cdot 0.1^{\,[t \ge \frac{2}{3}T] + [t \ge \frac{8}{9}T]},
    \qquad w(t) = f + (1 - f)\,\min(1, t / T_w)

for :math:`T` iterations (the paper's 60k and 80k of 90k), a linear warmup of
:math:`T_w` steps from factor :math:`f`; SGD with momentum 0.9 and weight decay
:math:`10^{-4}`; horizontal flips with probability 0.5.

*Time budgets.* With :attr:`TrainConfig.time_budget_s` (``focal-detect train
--time-budget SECONDS``) the schedule runs over the fraction of the budget used instead
of the step (:mod:`focal_detect.engine.budget`): it completes at the budget on a fast or
a slow or a suddenly busy machine, the run stops there, and a resumed run continues the
clock. The progress bar and the logged rows show the time left and the steps expected.

*Reproducibility.* One seed, :attr:`TrainConfig.seed`, governs everything a run
draws: the initial weights (when :func:`train` gets a model factory it calls
:func:`seed_everything` before building it; ``focal-detect train`` and ``demo`` seed
before building theirs; a model you build yourself needs
``seed_everything(seed)`` first), the data order, the augmentation and the sampler.
Two runs with the same seed, device and thread count give bit-identical weights;
another seed gives another run.

*Exact resumption.* Everything random in a run is a pure function of the step:
the data order of an epoch comes from :class:`torch.utils.data.DistributedSampler`
seeded with ``(seed, epoch)``, each sample's augmentation from
``(seed, epoch, index)`` (:class:`~focal_detect.data.SeededAugment`), and a checkpoint
stores the model, optimizer, scheduler, step, the metric history and the torch, CUDA,
NumPy and Python RNG states. A run interrupted after any checkpoint and resumed gives
bit-for-bit the parameters of an uninterrupted run (on the same device and thread
count). Checkpoints are written to a temporary file in the same folder and moved into
place with :func:`os.replace`, so a crash never leaves a truncated checkpoint;
temporaries left by killed writers are removed.

*Resume semantics.* ``resume=False`` starts afresh; ``resume=True`` (``--resume``)
continues from ``output_dir/checkpoint_last.pt`` and is an error if there is none (a
mistyped ``output_dir`` no longer starts a silent fresh run); ``resume="auto"``
(``--resume auto``) continues if the file exists and starts afresh otherwise.
Resuming needs the same global batch, seed and dataset size, and says so otherwise.

*Integrity.* A checkpoint is a plain dict (``torch.load(path, weights_only=True)``
reads it) with a format version and the SHA-256 of a canonical serialisation of its
content, verified by :func:`load_checkpoint`. Every way a file can be bad (a
directory, empty, truncated, random or overwritten bytes, a bare tensor, missing or
wrong keys, tensors of the wrong shape, a newer format) raises one
:class:`CheckpointError` naming the file and the problem, before the model is
changed; the CLI prints it on one line and exits with status 2. Files written by
0.1.0 (no digest) load with a warning that their integrity cannot be verified.
All loading uses ``torch.load(..., weights_only=True)``.

*Memory.* The training loop holds the model, optimizer state and one batch; anchor
assignment stays within its byte budget
(:func:`~focal_detect.matching.assign_anchors`, ``max_memory_bytes``, 512 MiB by
default) on both of its paths, with one preallocated workspace per call.

*Distributed.* Under ``torchrun`` (``torch.distributed`` initialised) the model is
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, each process reads
``batch_size`` images of a :class:`~torch.utils.data.DistributedSampler` shard, and the
global batch is ``batch_size * world_size``. The model's loss normaliser must be
all-reduced for the update to equal a single-process update on the global batch: with
:math:`S_r` the summed loss of process :math:`r` and :math:`N = \sum_r N_r` the global
foreground count, the global loss is :math:`L = \sum_r S_r / N`; DDP *averages*
gradients over the :math:`W` processes, so each process must return
:math:`L_r = W S_r / N` (the normaliser all-reduced as a *mean*, :math:`N / W`), and then
:math:`\frac{1}{W} \sum_r \nabla L_r = \nabla L` exactly (``tests/test_distributed.py``
checks it).

*Teardown.* :func:`train` drops its DDP wrapper and, under DDP, ends with a barrier, so
every process leaves it after process 0's last checkpoint, metric file and plot, and
none is left inside a collective. After your own collectives, call
:func:`torch.distributed.barrier` before :func:`torch.distributed.destroy_process_group`.
Import ``torch._dynamo`` *before* :func:`torch.distributed.init_process_group`:
DDP imports it, and imported while a process group exists it keeps a reference to
that group (torch 2.13.0), so ``destroy_process_group`` cannot free it and gloo's worker
threads run on into interpreter shutdown, where a thread that touches Python aborts
the process. ``focal-detect train`` and the torchrun tutorial do both.

*Host-sync policy.* The loop reads values from the device only where it must:

- *Metrics* (the summed loss, each loss of the model's dict, ``grad_norm`` when
  clipping) are added up on the device in a :class:`MetricWindow` and read back with
  one synchronisation every ``log_every`` steps and at the end (under DDP one
  all-reduce of the means, then that read). The progress bar shows the last logged
  loss, so it reads nothing of its own.
- *Non-finite loss*: with ``nonfinite_check="step"`` (default) each step reads one bool
  (``isfinite`` of the summed loss) before the backward pass; it fires at the bad step
  itself, names it and its losses, and the model keeps the previous step's weights.
  With ``"window"`` a step reads nothing: the check rides on the metric read and fires
  at the next log, before the next checkpoint (one extra read there) or at the end,
  naming the window of steps. No checkpoint is ever written after a non-finite loss.
- *Checkpoints* copy the state to the host (they read everything, every
  ``checkpoint_every`` steps); ``time_limit_s`` under DDP broadcasts one flag per step.
- *Targets* are not read by the loop. The model's own value checks are its business:
  :class:`~focal_detect.models.RetinaNet` checks the boxes and labels of a batch with
  one synchronisation.

So with the defaults a step costs the engine one host sync, and ``"window"`` none
(``tests/test_train_pieces.py`` counts them).
"""

from focal_detect.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from focal_detect.engine.config import TrainConfig, paper_lr
from focal_detect.engine.loop import TrainResult, epoch_batches, train
from focal_detect.engine.metrics import MetricWindow, plot_history
from focal_detect.engine.resume import Checkpointer
from focal_detect.engine.rng import get_rng_state, seed_everything, set_rng_state
from focal_detect.engine.schedule import WarmupMultiStep, make_scheduler

__all__ = [
    "TrainConfig",
    "TrainResult",
    "WarmupMultiStep",
    "make_scheduler",
    "train",
    "seed_everything",
    "CheckpointError",
    "Checkpointer",
    "save_checkpoint",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "MetricWindow",
    "plot_history",
    "paper_lr",
    "epoch_batches",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LAST_CHECKPOINT",
]
