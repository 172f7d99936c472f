"""Settings for production hosts (group `env_prod`: hosts whose env is "prod").

Environment groups sit just above the inventory-file group and below region, zone and role groups.
"""
