"""A trained run back in memory: ``restore`` for the commands, :func:`load` for notebooks.

    run = diffjax.load("workdir/quickstart")        # EMA weights, newest checkpoint
    x = run.sample(64, seed=0)                      # the run's own sampler, (64, *x_shape)
    x = run.sample(64, seed=0, step=diffjax.samplers.Heun(), grid=diffjax.karras_grid(
        run.process, 18), guidance=2.0)             # plain diffusion: swap sampler / scale

:class:`Loaded` also exposes the bound network (``run.model(x, t, cond)``, a pytree of the
weights), its process and prediction kind for :func:`diffjax.sample` directly. Sampling goes
through the one scan driver, so a second call with the same shapes (and any new guidance
scale, a traced value) runs the compiled program again without tracing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from diffjax import methods as M
from diffjax.run.build import Built, build_sampling, read_run, restore, sample_weights
from diffjax.run.config import from_dict
from diffjax.run.train import class_labels, write_samples

__all__ = ["load", "Loaded", "sample"]


@dataclasses.dataclass
class Loaded:
    """A trained run: its network, weights, process and sampler.

    Attributes:
      config: the run's config (as trained, from ``run.json``).
      built: what the run layer built (``built.setup.network``, ``built.method``).
      params: the weights used (``weights`` names them: an EMA name or ``'params'``).
      step: the checkpoint's training step.
    """

    config: Any
    built: Built
    params: Any
    weights: str
    step: int

    @property
    def network(self):
        return self.built.setup.network

    @property
    def process(self):
        return self.built.setup.process

    @property
    def x_shape(self) -> tuple:
        return self.built.setup.x_shape

    @property
    def num_classes(self) -> int | None:
        return self.built.setup.num_classes

    @property
    def method(self) -> M.Method:
        return self.built.method

    @property
    def prediction(self) -> str:
        """What :attr:`model` predicts (for :func:`diffjax.sample`)."""
        if self.network.precond:
            return "x0"
        return build_sampling(self.config, self.process).prediction

    @property
    def model(self):
        """``model(x, t, cond)`` in diffjax time: the bound network (a pytree of the weights)."""
        return self.network.bind(self.params)

    def sample(self, n: int, *, seed: int = 0, cond=None, offset: int = 0,
               **overrides) -> np.ndarray:
        """``n`` samples; sample ``i`` depends only on ``(seed, offset + i)``.

        Args:
          n: number of samples.
          seed: the PRNG seed.
          cond: labels ``(n,)`` of a class-conditional run (default: class-balanced
            ``(offset + i) mod K``).
          offset: index of the first sample (to continue a sequence of batches).
          **overrides: plain diffusion only: fields of :class:`~diffjax.methods.Sampling`
            (``step``, ``grid``, ``guidance``, ``clip_x0``, ...) replacing the config's.
        """
        method = self.method
        if overrides:
            if self.method.name != "diffusion":
                raise ValueError(f"sampler overrides {sorted(overrides)} apply to plain "
                                 f"diffusion; this run's method is {self.method.name!r} (set "
                                 "its sampling keys in config.method)")
            # a new Method is cheap: the jitted program is keyed on the model's and step's
            # structure, so the same sampler with new values (a guidance scale) never retraces
            sampling = build_sampling(self.config, self.process, **overrides)
            method = M.diffusion(self.built.setup, loss=_unused, sampling=sampling)
        if cond is None:
            cond = class_labels(int(n), self.num_classes, offset)
        return np.asarray(method.sample(self.params, jax.random.key(int(seed)), int(n), cond,
                                        offset))


    def decode(self, latents) -> np.ndarray:
        """Latents (as :meth:`sample` returns them for a latent run) -> images in ``[-1, 1]``
        through the run's ``config.vae`` (:func:`diffjax.run.encode.decoder_of`).

        Raises:
          ValueError: the run's config has no ``vae`` section.
        """
        from diffjax.run.encode import decoder_of

        decode = decoder_of(self.built)
        if decode is None:
            raise ValueError("this run's config has no vae section: its samples are not "
                             "latents of a VAE")
        return decode(latents)


def _unused(*args, **kwargs):
    raise RuntimeError("a loaded run samples; it does not train")


def load(workdir, *, weights: str | None = None, config=None) -> Loaded:
    """Load the newest checkpoint of a run for sampling in a notebook.

    Args:
      workdir: the run's ``--workdir`` (holds ``run.json`` and ``checkpoints/``).
      weights: an EMA name, ``'params'`` for the online weights, or ``None`` for the run's
        ``sample.ema`` (default: its first EMA).
      config: the config to rebuild with (default: the one saved in ``run.json``).

    Returns:
      A :class:`Loaded` run.
    """
    saved = read_run(workdir)
    config = from_dict(saved["config"]) if config is None else config
    built, state = restore(config, workdir)
    if weights is None:
        params, which = sample_weights(config, state)
    elif weights == "params":
        params, which = state.params, "params"
    else:
        if weights not in state.ema:
            raise ValueError(f"weights={weights!r}: this run has the EMAs {sorted(state.ema)} "
                             "(or 'params')")
        params, which = state.ema[weights], weights
    return Loaded(config, built, params, which, int(state.step))


def sample(config, workdir, num_samples=None, seed=None, output=None) -> dict:
    """The ``sample`` command: sample from the newest checkpoint in ``workdir``.

    Uses the run's ``sample.ema`` weights (default: its first EMA). The files are named
    ``sampled.npz`` / ``sampled.png``, never ``samples.*``, so the grid that ``train`` wrote
    at the end of training is not overwritten.

    Args:
      config: the run's config.
      workdir: the run's folder (``checkpoints/``, ``run.json``).
      num_samples: how many (default ``sample.num_samples``).
      seed: the PRNG seed (default the config's ``seed``).
      output: the folder to write to (created; default ``workdir``).

    Returns:
      ``{"num_samples", "path", "weights"}``.

    Raises:
      FileNotFoundError: ``workdir`` holds no checkpoint (before anything is built or
        written).
    """
    built, state = restore(config, workdir)
    params, which = sample_weights(config, state)
    out = Path(workdir if output is None else output)
    out.mkdir(parents=True, exist_ok=True)
    return write_samples(built, params, out, num_samples=num_samples, seed=seed,
                         weights=which, name="sampled")
