"""The run layer: the only part of diffjax that reads an ``ml_collections`` config.

Config files (``configs/<paper>_<dataset>.py``) describe a run; this package turns one into
library objects (:mod:`~diffjax.run.build`: process, :class:`~diffjax.models.Network`, data,
:class:`~diffjax.methods.Method`, optimizer, EMAs) and runs the commands of
``python -m diffjax`` (:mod:`~diffjax.run.cli`): ``train`` (:mod:`~diffjax.run.train`),
``sample`` and the notebook loader ``diffjax.load`` (:mod:`~diffjax.run.load`), ``eval``
(:mod:`~diffjax.run.evaluate`) and ``demo`` (:mod:`~diffjax.run.demo`). Configs import only
:mod:`diffjax.run.smoke` (their ``:smoke`` variant helper), never a runner module.

Nothing is imported here, so ``import diffjax.run.smoke`` stays light.
"""
