"""Spectra's core library: knowledge every layer needs and nothing that touches a host.

Layers, lowest first (an import only ever goes down): ``spectra`` (PKI, topology, cluster settings, the one
module that touches pyinfra's private API) <-
``facts`` (what a host looks like) <- ``deploys`` (operations and components) <- ``spectra_cli``,
``compliance``, ``lab``. See docs/architecture.md.
"""
