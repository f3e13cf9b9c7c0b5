"""Local Kafka, MinIO and FerretDB servers for development and tests, without containers.

`python -m infra up|down|status|logs|build|bootstrap` builds the servers once (cached under
``settings.build_cache``), runs them as background processes (pid files and logs under
``settings.state_dir``) and bootstraps topics, buckets and catalog indexes.
"""
