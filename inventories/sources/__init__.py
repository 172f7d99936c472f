"""Host sources for Spectra inventories: EC2, Terraform outputs, the local lab, static lists."""
