"""Argo CD Config Management Plugin ``forge-release`` (issue 9, item 5; DESIGN §8; docs/cmp.md).

``forge-cmp generate`` turns an app directory of the GitOps repository (a ReleasePointer and the
EnvironmentConfigs) into the manifests Argo CD applies: the Release OCI is pulled by digest and
verified (:mod:`forge.cmp.release`), its resources layer read in memory with limits
(:mod:`forge.cmp.extract`, :mod:`forge.cmp.documents`), the values merged
(:mod:`forge.cmp.values`) and resolved (:mod:`forge.cmp.render`). Orchestrated by
:mod:`forge.cmp.generate`; :mod:`forge.cmp.__main__` prints all or nothing.

Nothing is imported here: the plugin's start time is its cost per app refresh.
"""

__all__: list[str] = []
