"""The TPU training path: the shared model (`specc.runtime.train.model`) run through
torch-xla SPMD.

One process per host (one in total on a single TPU VM or on XLA's CPU backend in tests)
traces the global program; `xr.use_spmd()` makes every local device a shard of one
logical device, the mesh has named axes (data, fsdp, tensor), and `xs.mark_sharding`
annotates parameters, activations and the batch. XLA's GSPMD partitioner inserts the
collectives. Only device and mesh set-up differ from the GPU path: the model, the data
order, the optimizer and lr schedule, the metrics and the checkpoint layout are shared.

Runs only in an environment with torch-xla (torch 2.9.0 + torch-xla 2.9.0; see
`scripts/setup-tpu-venv.sh`); nothing outside this package imports it.
"""
