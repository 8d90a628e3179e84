"""Shared training machinery: one loop, one optimiser builder, one learning-rate schedule.

- ``config``: ``OptimConfig`` and ``ComputeConfig``, the keys every training section of params.yaml shares;
- ``optim``: ``build_optimizer`` (AdamW) and ``lr_at`` (warm-up, then constant / cosine / linear decay);
- ``loop``: ``train_loop`` with its extension points (batch source, evaluation function, callbacks, log);
- ``batches``: the batch-source protocol, the rows of a global batch a process builds (``Shard``), prefetching;
- ``dist``: the processes of a torchrun launch (rank, main process, the collectives stages need);
- ``checkpoint``: exact resume; ``finished``: finished pieces of a stage's work (a killed GLUE stage reruns only
  the unfinished fine-tuning runs); ``live``: DVCLive logging (``TrainLog``); ``compute``: device, precision,
  threads, MFU; ``objectives``: the pretraining objectives named by ``tinyhelen.exp1.models``; ``rng``: seeds.

Import the modules (``from tinyhelen.train.loop import train_loop``): this package file imports
nothing, so a module that only needs ``tinyhelen.train.config`` does not depend on the loop.

Users: EXP1 pretraining (``tinyhelen.exp1.pretrain``) and GLUE fine-tuning (``tinyhelen.exp1.glue``), instruction
tuning (``tinyhelen.exp2.instruct_data``), the curriculum proxy and its reference LM (``tinyhelen.exp3.curriculum``).
"""
