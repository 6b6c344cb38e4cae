"""The pretraining runtime: the model from a ModelSpec, parallel layouts on a DeviceMesh,
the training loop, checkpoints and resume.

    model.py        decoder-only transformer (+ all-gather context parallelism)
    moe.py          top-k MoE FFN with capacity, aux loss and expert-parallel all-to-all
    parallelize.py  mesh, apply_tp / apply_ep / apply_cp / apply_ac / apply_compile / apply_fsdp, pipeline split
    data.py         deterministic, resumable batches from the token shards
    optim.py        AdamW and warmup + cosine | linear | WSD | constant
    checkpoint.py   atomic DCP checkpoints, keep-last-k, resume
    loop.py         train(): the loop
    stage.py        run(config): the `pretrain` stage (final weights, success marker)

Importing this package does not import torch; its modules do. The stage's config is built by
`specc.emit.configs.pretrain` (torch-free).
"""
