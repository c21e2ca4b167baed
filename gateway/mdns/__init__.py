"""mDNS: the gateway found on the LAN as `<hostname>.local`, with its DNS-SD services.

`interfaces` and `wire` are pure; `advertiser` runs python-zeroconf and the legacy-unicast answerer.
"""
