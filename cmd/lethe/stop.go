package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// stopClient stops a River client softly: jobs in progress get up to a
// minute to finish. A second signal, or the minute passing, cancels them;
// cancelled jobs are retried later, and no batch is left half-done because
// each commits in one transaction.
func stopClient(client *river.Client[pgx.Tx], logger *slog.Logger) error {
	hard := make(chan os.Signal, 1)
	signal.Notify(hard, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(hard)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		select {
		case <-hard:
			logger.Warn("second signal: cancelling jobs in progress")
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := client.Stop(ctx); err != nil {
		logger.Warn("jobs did not finish in time; cancelling them", "error", err)
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := client.StopAndCancel(cctx); err != nil {
			return fmt.Errorf("error stopping the queue client: %w", err)
		}
	}
	logger.Info("stopped")
	return nil
}
