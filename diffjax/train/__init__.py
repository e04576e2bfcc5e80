"""Training: state, pure step, EMAs, optimizers, sharding, orbax checkpoints and the loop."""

from diffjax.train.checkpoint import (
                                      Checkpointer,
                                      NoRestorableCheckpointError,
                                      abstract_like,
                                      state_digest,
)
from diffjax.train.ema import EMASpec, ema_decay, update_emas
from diffjax.train.loop import PreemptionGuard, fit, restore_or_init
from diffjax.train.optim import make_optimizer, make_schedule
from diffjax.train.sharding import batch_sharding, make_mesh, replicated, shard_batch
from diffjax.train.state import (
    TrainState,
    abstract_train_state,
    create_train_state,
    state_shardings,
)
from diffjax.train.step import jit_train_step, make_train_step
