package retention

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lethehq/lethe/archive"
)

// hexRuns are the ids in an error (segment names, version ids) that differ
// between attempts that fail the same way.
var hexRuns = regexp.MustCompile(`[0-9a-f]{12,}`)

// Outage reports whether err is an outage rather than a failure of the
// work itself: the object store or the database unreachable, restarting or
// overloaded, or a transaction that lost a race. Retrying is what ends it.
func Outage(err error) bool {
	if errors.Is(err, archive.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "53", "57":
			return true
		}
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.SafeToRetry(err)
}

// Refused reports whether the database refused a statement in a way that
// no retry changes: SQLSTATE class 42 (a table, column or privilege that is
// missing, a predicate that no longer parses) or 22 (a value the statement
// cannot take).
func Refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "42") || strings.HasPrefix(pgErr.Code, "22"))
}
