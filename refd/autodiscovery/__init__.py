"""Account autodiscovery: the setup documents mail clients fetch, answered per user.

Pure modules: `answer` (which server a document names for an address, by
the routing table), `documents` (Mozilla autoconfig, Microsoft Autodiscover
POX, the Apple configuration profile, and the Autodiscover request reader)
and `signing` (CMS signature of a profile). No sockets, trio, YAML or
metrics here (tests/routing/test_purity.py checks); the HTTP side that
serves them is an adapter around these functions.
"""
