"""Settings for one availability zone (group `az_us_east_1a`); copy for other zones (`az_<zone>`).

Zone files win over env_* and region_* files and lose to role files. Typical use: a zone-local
package mirror or proxy. Roll out zone by zone with `spectra rollout INVENTORY DEPLOY --by-zone`.
"""
