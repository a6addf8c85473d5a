"""Identity resolution: who held an address at a moment, and which account a feed item points at.

`assignments` stores the sources that answer the first question (sessions, RADIUS accounting,
static prefixes, CGNAT port blocks); `matching` answers the second for whole feeds at a time.
"""
