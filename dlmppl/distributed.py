r"""Scale-out on ``torch.distributed``: data-parallel SVI and MCMC chains across processes.

Launch one process per device with ``torchrun --nproc_per_node=N script.py`` (several machines:
``--nnodes``/``--rdzv_endpoint``, see the torchrun docs); in the script call :func:`init` once.

* :class:`DistributedSVI` is ``pyro.infer.SVI`` with DDP semantics (Li et al. 2020, "PyTorch
  Distributed: Experiences on Accelerating Data Parallel Training", VLDB): every rank evaluates the
  ELBO on its shard of the global batch (:func:`distributed_loader`, a ``DistributedSampler``),
  the *Euclidean* gradients of all the parameters (network weights, manifold parameters,
  curvatures) are all-reduced *before* the optimiser step, so that every rank's Riemannian step
  (:func:`dlmppl.inference.RiemannianAdam` / ``RiemannianSGD``, or any Pyro optimiser) is the same
  and the replicas stay identical; parameters are broadcast from rank 0 when they are created.
  :meth:`DistributedSVI.save` / :meth:`~DistributedSVI.load` checkpoint the param store, the
  optimiser state, a module's ``state_dict`` and every rank's random state, written by rank 0.
* :func:`run_chains` runs MCMC chains on all ranks (global chain ``g`` seeded ``base_seed + g``)
  and gathers draws and sample stats on rank 0 into one arviz ``InferenceData`` whose ``chain``
  dimension runs over all ranks: the same result as running the chains one after the other in
  one process with the same seeds.

Every function also works without an initialised process group (one process, world size 1).
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
import torch.distributed as dist
from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER

__all__ = ["DistributedSVI", "distributed_loader", "init", "is_main", "rank", "run_chains", "world_size"]


# --------------------------------------------------------------------------- process group


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 without an initialised process group)."""
    return dist.get_rank(group) if _active() else 0


def world_size(group=None) -> int:
    """The number of processes in ``group`` (1 without an initialised process group)."""
    return dist.get_world_size(group) if _active() else 1


def is_main(group=None) -> bool:
    """Whether this process is rank 0 (the one that writes checkpoints and results)."""
    return rank(group) == 0


def init(backend: str | None = None, timeout_s: float = 600.0) -> torch.device:
    """Initialise the default process group from torchrun's environment and return this rank's device.

    ``backend``: ``None`` picks NCCL when CUDA is available and gloo otherwise.  Reads ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (set by ``torchrun``) and, on CUDA,
    ``LOCAL_RANK`` for the device.  Without ``WORLD_SIZE`` in the environment (a plain ``python
    script.py``) nothing is initialised and the device is ``cuda`` or ``cpu``: the same script
    runs in one process.
    """
    cuda = torch.cuda.is_available()
    if _active():
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        return device
    if "WORLD_SIZE" not in os.environ:
        return torch.device("cuda" if cuda else "cpu")
    backend = backend or ("nccl" if cuda else "gloo")
    if backend not in ("nccl", "gloo", "mpi", "ucc"):
        raise ValueError(f"backend: one of 'nccl', 'gloo', 'mpi', 'ucc', got {backend!r}")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=float(timeout_s)))
    return device


# --------------------------------------------------------------------------- data


def distributed_loader(data, global_batch_size: int, *, shuffle: bool = True, seed: int = 0,
                       drop_last: bool = True, group=None, **loader_kwargs):
    """A ``DataLoader`` over this rank's shard, ``global_batch_size // world_size`` rows a batch.

    ``data``: a ``Dataset`` or a tensor (rows ``(N, ...)``, wrapped in a ``TensorDataset``, so each
    batch is a 1-tuple).  A ``DistributedSampler`` (shuffled with ``seed + epoch``; call
    ``loader.sampler.set_epoch(epoch)`` each epoch) splits every epoch into ``world_size``
    interleaved shards of equal length: at step ``t`` the ranks' batches together are rows
    ``perm[t B:(t + 1) B]`` of the epoch's permutation (``B = global_batch_size``), i.e. the
    batch a single process would take with ``batch_size=B`` and the same permutation.
    ``ValueError`` when ``global_batch_size`` is not a positive multiple of the world size.
    """
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    n = world_size(group)
    if isinstance(global_batch_size, bool) or int(global_batch_size) != global_batch_size or global_batch_size < n:
        raise ValueError(f"global_batch_size: a positive multiple of the world size {n}, got {global_batch_size!r}")
    if global_batch_size % n:
        raise ValueError(f"global_batch_size: {global_batch_size} is not a multiple of the world size {n}")
    if isinstance(data, torch.Tensor):
        data = TensorDataset(data)
    sampler = DistributedSampler(data, num_replicas=n, rank=rank(group), shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(data, batch_size=int(global_batch_size) // n, sampler=sampler, drop_last=drop_last, **loader_kwargs)


# --------------------------------------------------------------------------- SVI


class DistributedSVI:
    r"""``pyro.infer.SVI`` across the processes of a ``torch.distributed`` job.

    Args:
        model, guide: the Pyro programs (e.g. ``vae.model``, ``vae.guide`` of a
            :class:`~dlmppl.models.ManifoldVAE`); every rank must create the same parameters.
        optim: a Pyro optimiser (``dlmppl.inference.RiemannianAdam({...})``, ``pyro.optim.Adam``).
        loss: an ELBO with ``loss_and_grads`` (``Trace_ELBO()``, ``TraceMeanField_ELBO()``...).
        reduction: how the ranks' gradients (and losses) combine.  ``"sum"`` (default): the
            objective of a step is the *sum* of the ranks' ELBOs, right for models whose ELBO is a
            sum over the rows of the batch they are given (``ManifoldVAE.model(x)``, a
            ``pyro.plate("data", len(x))``): the gradient is then that of the global batch, as in
            one process with ``global_batch_size`` rows.  ``"mean"``: their average, right for
            models that already scale their shard to the whole data set (a plate with ``size=N``
            and ``subsample=``), whose ELBO each rank estimates: the average is the global-batch
            estimate with the same scaling.  Terms outside the data plate (a global prior) are
            counted ``world_size`` times under ``"sum"`` and once under ``"mean"``.
        module: an ``nn.Module`` (the VAE) whose buffers are broadcast from rank 0 with the
            parameters, and whose ``state_dict`` goes into checkpoints.
        src: the rank whose initial parameters every rank takes.
        group: a process group (default: the world).

    :meth:`step` runs ``loss.loss_and_grads`` on this rank's batch, all-reduces the gradients of
    every parameter in one flat buffer per (device, dtype) (a parameter no rank touched keeps
    ``grad=None``, as in DDP with ``find_unused_parameters``), then lets the optimiser step them
    all: each rank takes the same step from the same values.  The first time a parameter appears
    its value is broadcast from ``src`` and that step's gradients are recomputed, so the ranks
    start identical however they were seeded.  Without a process group it is ``SVI`` exactly.

    Not covered: regularisers that couple the rows of the batch (``ManifoldVAE(prior_matching=)``:
    an OT cost of the shard is not a sum over rows, so ``N`` shards give a different objective
    than one global batch), and data-dependent initialisation on the first batch
    (``ManifoldVAE.centre_locations`` of SO(3)/torus/RP^d latents sees rank ``src``'s shard).
    """

    def __init__(self, model, guide, optim, loss, *, reduction: str = "sum", module: torch.nn.Module | None = None,
                 src: int = 0, group=None):
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not hasattr(loss, "loss_and_grads"):
            raise ValueError(f"loss: an ELBO with loss_and_grads, got {type(loss).__name__}")
        self.model, self.guide, self.optim, self.loss = model, guide, optim, loss
        self.reduction = reduction
        self.module = module
        self.src = int(src)
        self.group = group
        self.num_steps = 0
        self._synced: set = set()

    # -- collectives ----------------------------------------------------
    def _params(self, *args, **kwargs):
        with poutine.trace(param_only=True) as capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {name: site["value"].unconstrained() for name, site in capture.trace.nodes.items()}
        return loss, dict(sorted(params.items()))

    def _broadcast(self, params: dict) -> None:
        names = sorted(params)
        every = [None] * world_size(self.group)
        dist.all_gather_object(every, names, group=self.group)
        for r, theirs in enumerate(every):
            if theirs != names:
                raise ValueError(
                    f"model/guide: rank {r} created the parameters {theirs}, rank {rank(self.group)} {names}; "
                    "every rank must run the same program"
                )
        with torch.no_grad():
            for name in names:
                dist.broadcast(params[name].data, src=self.src, group=self.group)
            if self.module is not None:
                for b in self.module.buffers():
                    dist.broadcast(b.data, src=self.src, group=self.group)

    def _allreduce(self, params: dict, loss: float) -> float:
        ps = list(params.values())
        # one small float64 buffer: the loss, then one 'has a gradient' count per parameter
        head = torch.zeros(1 + len(ps), dtype=torch.float64, device=self._device())
        head[0] = float(loss)
        head[1:] = torch.tensor([p.grad is not None for p in ps], dtype=torch.float64)
        buckets: dict = {}
        for p in ps:
            buckets.setdefault((p.device, p.dtype), []).append(p)
        flats = []
        for group_ps in buckets.values():
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group_ps])
            dist.all_reduce(flat, group=self.group)
            flats.append((group_ps, flat))
        dist.all_reduce(head, group=self.group)
        scale = 1.0 / world_size(self.group) if self.reduction == "mean" else 1.0
        used = dict(zip(ps, (head[1:] > 0).tolist(), strict=True))
        for group_ps, flat in flats:
            if scale != 1.0:
                flat.mul_(scale)
            pos = 0
            for p in group_ps:
                k = p.numel()
                p.grad = flat[pos : pos + k].view_as(p).clone() if used[p] else None
                pos += k
        return float(head[0]) * scale

    # -- the step ---------------------------------------------------------
    def step(self, *args, **kwargs) -> float:
        """One optimisation step on this rank's batch ``args``; returns the combined loss of all ranks
        (their sum, or mean under ``reduction="mean"``) as a float."""
        loss, params = self._params(*args, **kwargs)
        if _active():
            new = set(params) - self._synced
            if new:
                pyro.infer.util.zero_grads(set(params.values()))
                self._broadcast(params)
                self._synced |= set(params)
                loss, params = self._params(*args, **kwargs)
            loss = self._allreduce(params, loss)
        self.optim(list(params.values()))
        pyro.infer.util.zero_grads(set(params.values()))
        self.num_steps += 1
        return float(loss)

    @torch.no_grad()
    def evaluate_loss(self, *args, **kwargs) -> float:
        """The combined loss of all ranks on their batches, without a step (collective)."""
        loss = float(self.loss.loss(self.model, self.guide, *args, **kwargs))
        if not _active():
            return loss
        t = torch.tensor([loss], dtype=torch.float64, device=self._device())
        dist.all_reduce(t, group=self.group)
        return float(t[0]) / (world_size(self.group) if self.reduction == "mean" else 1)

    def _device(self):
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    # -- checkpoints ------------------------------------------------------
    def save(self, path) -> None:
        """Write a checkpoint (collective: every rank calls it, rank ``src`` writes ``path``).

        Holds the param store (unconstrained values and constraints), the optimiser's state, the
        module's ``state_dict``, :attr:`num_steps`, and the torch random state of every rank (so that a
        resumed run draws what the uninterrupted one would have)."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        rngs = [rng]
        if _active():
            rngs = [None] * world_size(self.group)
            dist.all_gather_object(rngs, rng, group=self.group)
        if rank(self.group) == self.src:
            state = {
                "param_store": pyro.get_param_store().get_state(),
                "optim": self.optim.get_state(),
                "module": None if self.module is None else self.module.state_dict(),
                "num_steps": self.num_steps,
                "reduction": self.reduction,
                "rng": rngs,
            }
            tmp = f"{path}.tmp"
            torch.save(state, tmp)
            os.replace(tmp, path)  # a crash while writing leaves the previous checkpoint
        if _active():
            dist.barrier(group=self.group)

    def load(self, path, map_location=None) -> None:
        """Resume from :meth:`save`'s checkpoint (every rank reads ``path``; call before :meth:`step`,
        with a fresh optimiser).  The random state is restored when the world size is the one saved.

        A model that is a ``PyroModule`` (or calls ``pyro.module``) needs ``module=`` at construction:
        Pyro runs such a module's own ``nn.Parameter`` objects, so the loaded values are copied into
        them and the param store made to hold those very tensors (otherwise the optimiser would step
        copies that never receive a gradient)."""
        state = torch.load(path, map_location=map_location, weights_only=False)
        store = pyro.get_param_store()
        store.set_state(state["param_store"])
        self.optim.set_state(state["optim"])
        if self.module is not None and state["module"] is not None:
            self.module.load_state_dict(state["module"])
            self._adopt_module_params(store)
        self.num_steps = int(state["num_steps"])
        rngs = state["rng"]
        if len(rngs) == world_size(self.group):
            mine = rngs[rank(self.group)]
            torch.set_rng_state(mine["cpu"])
            if "cuda" in mine and torch.cuda.is_available():
                torch.cuda.set_rng_state(mine["cuda"])
        # every rank read the same values: nothing to broadcast for these parameters
        self._synced |= set(state["param_store"]["params"])


    def _adopt_module_params(self, store) -> None:
        # pyro.module (how a PyroModule registers a plain submodule) keeps running the module's own
        # nn.Parameter and only *reads* the store: the store must hold that very tensor (now with
        # the checkpoint's value), or the optimiser steps a copy that never gets a gradient
        own = dict(self.module.named_parameters())
        for name in list(store.keys()):
            dotted = name.replace(_MODULE_NAMESPACE_DIVIDER, ".")
            hits = [n for n in own if dotted == n or dotted.endswith("." + n)]
            if len(hits) == 1:
                p = own[hits[0]]
                old = store._params[name]
                if old is not p and old.shape == p.shape:
                    del store._param_to_name[old]
                    store._params[name] = p
                    store._param_to_name[p] = name


# --------------------------------------------------------------------------- MCMC


def _chains_of(r: int, n_ranks: int, num_chains: int) -> range:
    base, extra = divmod(num_chains, n_ranks)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def run_chains(kernel_fn, *model_args, num_chains: int, num_samples: int, warmup_steps: int | None = None,
               base_seed: int = 0, model_kwargs: dict | None = None, dst: int = 0, group=None,
               mcmc_kwargs: dict | None = None, **idata_kwargs):
    """Run ``num_chains`` MCMC chains spread over the ranks; one ``InferenceData`` on rank ``dst``.

    Args:
        kernel_fn: a callable returning a fresh kernel, e.g. ``lambda: RiemannianNUTS(model)``.
        model_args, model_kwargs: the model's arguments.
        num_chains: chains in all; rank ``r`` runs a contiguous block of global chain indices
            (``num_chains`` need not divide by the world size).
        num_samples, warmup_steps: per chain, as in ``pyro.infer.MCMC``.
        base_seed: chain ``g`` runs after ``pyro.set_rng_seed(base_seed + g)``: independent
            streams, and the draws do not depend on how the chains are spread over ranks.
        mcmc_kwargs: more arguments of ``pyro.infer.MCMC`` (one chain each).
        idata_kwargs: passed to :func:`dlmppl.diagnostics.to_inference_data` (``log_likelihood``,
            ``coords``, ``dims``...).

    Returns on rank ``dst`` an ``InferenceData`` with ``posterior`` draws ``(num_chains,
    num_samples, *site)``, ``sample_stats`` (``diverging``, ``energy``, ``step_size``, ... as the
    kernel reports them) with the chains in global order, ``log_likelihood`` and
    ``observed_data``; ``None`` on the other ranks.  Without a process group: every chain here,
    one after the other, the same numbers.
    """
    from pyro.infer import MCMC

    from .diagnostics import to_inference_data
    from .diagnostics.convert import mcmc_sample_stats

    if isinstance(num_chains, bool) or int(num_chains) != num_chains or num_chains < 1:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    model_kwargs = model_kwargs or {}
    r, n = rank(group), world_size(group)
    mine = []
    model = None
    for g in _chains_of(r, n, int(num_chains)):
        pyro.set_rng_seed(int(base_seed) + g)
        kernel = kernel_fn()
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=1,
                    disable_progbar=True, **(mcmc_kwargs or {}))
        mcmc.run(*model_args, **model_kwargs)
        model = getattr(kernel, "model", None)
        draws = {k: v.detach().cpu().numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
        stats, msites = mcmc_sample_stats(mcmc)
        mine.append((g, draws, stats, msites))
    every = [mine]
    if _active():
        every = [None] * n if r == dst else None
        dist.gather_object(mine, every, dst=dst, group=group)
    if r != dst:
        return None
    chains = sorted((c for part in every for c in part), key=lambda c: c[0])
    draws = {k: np.concatenate([c[1][k] for c in chains]) for k in chains[0][1]}
    keys = set.intersection(*(set(c[2]) for c in chains))
    stats = {k: np.concatenate([c[2][k] for c in chains]) for k in sorted(keys)}
    msites = {}
    for c in chains:
        msites.update(c[3])
    if model is None:
        model = getattr(kernel_fn(), "model", None)
    # the model's supports name the manifolds (with their curvature); the kernel's names only fill gaps
    manifolds = {**(msites if model is None else {}), **(idata_kwargs.pop("manifolds", None) or {})}
    return to_inference_data(draws, model=model, model_args=model_args, model_kwargs=model_kwargs,
                             sample_stats=stats, manifolds=manifolds, **idata_kwargs)
