package retention

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The services of this package take a config of what they need. Required
// fields have no default; the others are filled in by validate, which also
// refuses values the service cannot work with.

// Common is what every service of this package needs.
type Common struct {
	// Pool is lethe's database. Required.
	Pool *pgxpool.Pool
	// Plan is the compiled subject graph and policies. Required.
	Plan *Plan
	// Holds tells which subjects are held. Required.
	Holds HoldChecker
	// Logger gets the service's log lines. Required.
	Logger *slog.Logger
	// Now returns the current time. Default time.Now; tests move it.
	Now func() time.Time
}

func (c *Common) validate(service string) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Pool == nil || c.Plan == nil || c.Holds == nil || c.Logger == nil {
		return fmt.Errorf("error creating the %s: Pool, Plan, Holds and Logger are required", service)
	}
	return nil
}

// SweeperConfig is what a Sweeper needs.
type SweeperConfig struct {
	Common
	// Jobs tells which batch jobs are still queued, so that a batch whose
	// job died gets a new one. Required.
	Jobs JobLiveness
	// BatchSize is how many subjects one batch claims. Default 500.
	BatchSize int
	// QueryTimeout bounds each statement of the sweep. Default 5 minutes.
	QueryTimeout time.Duration
}

func (c *SweeperConfig) validate() error {
	defaultTo(&c.BatchSize, 500)
	defaultTo(&c.QueryTimeout, 5*time.Minute)
	return errors.Join(c.Common.validate("sweeper"),
		required("sweeper", "Jobs", c.Jobs != nil),
		atLeast("sweeper", "BatchSize", c.BatchSize, 1),
		atLeast("sweeper", "QueryTimeout", c.QueryTimeout, 0))
}

// MoverConfig is what a Mover needs.
type MoverConfig struct {
	Common
	// Store puts segments, with the worker's credentials. Required.
	Store archiver
	// LockMode is the Object Lock mode segments are put under
	// (archive.LockGovernance, LockCompliance or LockNone). Required.
	LockMode string
	// MastersFingerprint names the master recipients subject keys are
	// wrapped to (archive.MastersFingerprint). Required.
	MastersFingerprint string
	// QueryTimeout bounds each statement. Default 2 minutes.
	QueryTimeout time.Duration
}

func (c *MoverConfig) validate() error {
	defaultTo(&c.QueryTimeout, 2*time.Minute)
	return errors.Join(c.Common.validate("mover"),
		required("mover", "Store, LockMode and MastersFingerprint", c.Store != nil, c.LockMode != "", c.MastersFingerprint != ""),
		atLeast("mover", "QueryTimeout", c.QueryTimeout, 0))
}

// ExpirerConfig is what an Expirer needs.
type ExpirerConfig struct {
	Common
	// PageSize is how many manifest entries one transaction expires.
	// Default 500.
	PageSize int
}

func (c *ExpirerConfig) validate() error {
	defaultTo(&c.PageSize, 500)
	return errors.Join(c.Common.validate("expirer"), atLeast("expirer", "PageSize", c.PageSize, 1))
}

// defaultTo sets *v to def when it is the zero value.
func defaultTo[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// required refuses a config of service unless every one of set is true.
func required(service, names string, set ...bool) error {
	for _, ok := range set {
		if !ok {
			return fmt.Errorf("error creating the %s: %s is required", service, names)
		}
	}
	return nil
}

// atLeast refuses a setting of service below least.
func atLeast[T int | time.Duration](service, name string, v, least T) error {
	if v < least {
		return fmt.Errorf("error creating the %s: %s is %v, below %v", service, name, v, least)
	}
	return nil
}
