"""Sample-quality and likelihood evaluation that papers can be compared against.

Configuration-free: it draws samples through any ``sample_fn``, turns images into features in a
named *feature space*, computes the metrics against a cached reference and writes ``eval.json``
and ``eval.md``. The ``eval`` command wires it to configs.

The FID-50k protocol, the number image papers report (FID: Heusel et al. 2017, "GANs Trained by
a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"), step by step:

1. **Samples** (:mod:`.generation`). N = 50,000 samples; FID is biased upward at small N
   (roughly ``+c/N``), so a number is comparable only at the same N and the report always
   states N. Sample ``i`` uses the key ``fold_in(key, i)``, so the set depends neither on the
   chunk size nor on the device count (EDM's per-seed generation, Karras et al. 2022).
   Class-conditional models: class-balanced labels ``i mod K``.
2. **Quantisation** (:func:`quantize`). Samples in ``[-1, 1]`` become uint8 pixels before any
   feature is taken, as if written to PNG: ``'round'`` (EDM, the default) or ``'floor'``
   (ADM / score_sde); they differ by half a grey level.
3. **Features** (:mod:`.features`). The FID Inception (TF ``inception-2015-12-05`` as ported
   by pytorch-fid): ``pool3`` (2048-d) for FID and precision/recall, the 1008 ``logits`` for
   the Inception Score (Salimans et al. 2016), the 2023-d ``mixed_6/conv[..., :7]`` for sFID
   (Nash et al. 2021). Offline stand-ins (random weights, pixels, a digit classifier) exercise
   the pipeline but give numbers that are not comparable to papers.
4. **Reference** (:mod:`.reference`). Statistics of the reference set through the same path
   (CIFAR-10: the 50k training images; ImageNet: the ADM reference batch of Dhariwal & Nichol
   2021), cached in an ``.npz`` with a sha256 side file.
5. **Metrics** (:mod:`.scores`). FID = Frechet distance of the pool3 Gaussians; IS over 10
   splits (mean and std); sFID likewise on the spatial features; improved precision/recall
   with k = 3 on pool3 (Kynkaanniemi et al. 2019). 2-D data: sliced Wasserstein-1, MMD and
   the energy distance.

Likelihood (:mod:`.nll`, :func:`evaluate_bits_per_dim`): the discrete VLB of DDPM / iDDPM for
discrete-time models, the PF-ODE likelihood (Song et al. 2021) for continuous-time ones.

What cannot be checked offline: the real FID Inception weights are not shipped (diffjax never
downloads; :func:`diffjax.metrics.inception.load_inception` reads the converted pytorch-fid file
you supply), so neither the numbers with the real weights nor their parity with the original TF
graph (ADM / TTUR evaluators) are tested here. What is tested is the network itself: it matches
pytorch-fid's ``InceptionV3`` on seeded random weights (``tests/fixtures/inception_parity.npz``).
"""

from diffjax.evaluation.features import (
    FEATURES,
    IMAGE_METRICS,
    FeatureSpace,
    extract_features,
    feature_space,
    inception_features,
    iter_batches,
    jax_features,
    random_inception_variables,
)
from diffjax.evaluation.generation import (
    QUANTIZE_MODES,
    Progress,
    generate,
    iter_generate,
    quantize,
)
from diffjax.evaluation.nll import evaluate_bits_per_dim
from diffjax.evaluation.reference import (
    ReferenceFeatures,
    load_reference,
    reference_features,
    save_reference,
)
from diffjax.evaluation.scores import (
    POINT_METRICS,
    evaluate_images,
    evaluate_points,
    load_samples,
    write_report,
)

__all__ = [
    "IMAGE_METRICS",
    "POINT_METRICS",
    "FEATURES",
    "QUANTIZE_MODES",
    "FeatureSpace",
    "ReferenceFeatures",
    "quantize",
    "Progress",
    "generate",
    "iter_generate",
    "feature_space",
    "jax_features",
    "inception_features",
    "random_inception_variables",
    "iter_batches",
    "extract_features",
    "reference_features",
    "save_reference",
    "load_reference",
    "evaluate_images",
    "evaluate_points",
    "evaluate_bits_per_dim",
    "load_samples",
    "write_report",
]
