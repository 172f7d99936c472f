"""Settings for hosts with the `control_plane` role (group `control_plane`).

Role groups have the highest group precedence: they win over env_*, region_* and az_* files and over
all.py; host data in the inventory and `--data` still win over them (see group_data/README.md).
Put component settings here (keys of DEFAULTS in deploys/components/*.py).
"""
