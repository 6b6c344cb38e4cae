"""The launch phase: run a bundle's stages with submitit, locally or on Slurm.

`launcher.launch` submits (skipping completed stages), `task.StageTask` is what runs in
each job, `status` reads and cancels launches; `cli` wires `specc launch/status/cancel`.
Nothing here imports torch: the stages run in subprocesses started by the bundle's scripts.
"""
