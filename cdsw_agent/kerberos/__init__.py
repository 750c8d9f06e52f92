"""Per-user Kerberos: credentials checked against the KDC and stored encrypted (credentials,
kdc), each user's ticket kept valid by the master (tickets), and handed to the engines that act
for that user only (engine)."""
