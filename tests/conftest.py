"""Test configuration: 8 fake CPU devices (sharding tests) and strict numpy semantics.

XLA_FLAGS must be set before jax is imported anywhere.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is dominated by XLA compilation of small programs; skipping most XLA optimisation
# passes compiles them 1.5-3x faster on CPU and the tiny test models still run fast enough.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Compilation dominates the suite's time on CPU; identical programs compiled again (a resumed
# run, a restored model) come from this persistent cache instead.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DIFFJAX_TEST_CACHE", os.path.join(os.path.dirname(__file__),
                                                                    "..", ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import diffjax as dj  # noqa: E402

# gmm_small: a 3-component 2-D mixture with data inside [-1, 1]; gmm_smooth: the same with
# every std 0.3.
GMM_WEIGHTS = (0.3, 0.5, 0.2)
GMM_MEANS = ((-0.6, -0.3), (0.5, 0.4), (0.0, 0.8))
GMM_STDS = (0.10, 0.15, 0.05)


def make_gmm(process, stds=GMM_STDS):
    return dj.analytic.GaussianMixture.create(GMM_WEIGHTS, GMM_MEANS, stds, process)


@pytest.fixture(scope="session")
def gmm_reference():
    """200k exact draws from gmm_small and the two-sample SW1 noise floor at 10k vs 200k
    (mean over 5 independent 10k draws: a single draw's SW1 varies by ~30 %)."""
    gmm = make_gmm(dj.VP())
    ref = np.asarray(gmm.sample_data(jax.random.key(123), 200_000))
    floors = [dj.analytic.sliced_wasserstein(np.asarray(gmm.sample_data(jax.random.key(k), 10_000)),
                                             ref) for k in range(5)]
    return ref, float(np.mean(floors))
