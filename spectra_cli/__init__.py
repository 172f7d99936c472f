"""The ``spectra`` command: inventory/group_data validation, zero-host guard, pyinfra runs, zone rollouts."""
