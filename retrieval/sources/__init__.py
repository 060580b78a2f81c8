"""Sources and sync jobs: collections kept equal to the folders and databases documents live in.

- `registry`: sources in the control plane (a tenant's, by name);
- `jobs`: the job queue (leases, progress, cancel), no broker needed;
- `folder`, `sql`: the source kinds, read through `items.SourceReader`;
- `confine`: what a tenant's source may read (roots, its own secrets);
- `sync`: one job's work, resumable after a crash at any step;
- `worker`: the loop that schedules, claims and runs jobs (gateway or `ragdock worker`).
"""
