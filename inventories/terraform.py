"""Hosts from Terraform outputs (GCP, Azure, anything): see inventories/sources/terraform.py for the contract.

    SPECTRA_TF_OUTPUT=outputs.json spectra deploy inventories/terraform.py deploy.py
    SPECTRA_TF_DIR=infra/gcp-europe-west1 spectra validate inventories/terraform.py

``SPECTRA_TF_OUTPUT`` is a saved ``terraform output -json``; ``SPECTRA_TF_DIR`` runs Terraform there.
``SPECTRA_TF_OUTPUT_NAME`` picks another output than ``spectra_inventory``. For a fixed cloud/region,
copy this file (``gcp_europe_west1.py``) and hard-code the directory.
"""

import os

from inventories import ssh_tuning
from inventories.grouping import build_groups, file_group
from inventories.sources.terraform import DEFAULT_OUTPUT, load_terraform_records

ssh_tuning.enable()  # loaded before pyinfra connects: TCP_NODELAY, ~2 ms per remote command instead of ~44 ms

_records = load_terraform_records(
    output_file=os.environ.get("SPECTRA_TF_OUTPUT") or None,
    directory=os.environ.get("SPECTRA_TF_DIR") or None,
    output_name=os.environ.get("SPECTRA_TF_OUTPUT_NAME") or DEFAULT_OUTPUT,
)

globals().update(build_groups(_records, inventory_group=file_group(__file__)))
