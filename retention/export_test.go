package retention

// SetFault makes m call f at each fault point, for the tests of this
// package.
func SetFault(m *Mover, f func(point string) error) { m.faults = FaultsAt(f) }

// HMACSQL returns the SQL expression that computes, in PostgreSQL, the HMAC
// of the text expression keyExpr for subjects of table under secret, with
// its parameters numbered from $first.
func HMACSQL(secret, table, keyExpr string, first int) (string, []any) {
	return hmacSQL(keyExpr, first), newHMACParams(secret, table+"/").args()
}
