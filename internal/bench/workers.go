package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/lethehq/lethe/internal/app"
	"github.com/lethehq/lethe/internal/config"
)

// startWorkers starts the worker processes: each runs lethe bench --serve
// with the run's id on the same config file, and derives the bench's config
// from them as this process did.
func (b *run) startWorkers(ctx context.Context) ([]*exec.Cmd, error) {
	if b.opts.Binary == "" || b.opts.ConfigPath == "" {
		return nil, fmt.Errorf("error starting worker processes: the bench needs the lethe binary and the config file's path")
	}
	dir, err := os.MkdirTemp("", "lethe-bench-")
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	for i := range b.opts.Workers {
		cmd := exec.CommandContext(ctx, b.opts.Binary, "bench", "--serve", b.id, "--config", b.opts.ConfigPath, "--log-level", "warn")
		logf, err := os.Create(filepath.Join(dir, "worker-"+strconv.Itoa(i)+".log"))
		if err != nil {
			stopWorkers(cmds)
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			stopWorkers(cmds)
			return nil, fmt.Errorf("error starting worker %d: %w", i, err)
		}
		cmds = append(cmds, cmd)
	}
	b.opts.Progress("worker processes log to %s", dir)
	return cmds, nil
}

func stopWorkers(cmds []*exec.Cmd) {
	for _, c := range cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
}

// Serve is one worker process of bench run id: it works the run's jobs, on
// the config Run derived from cfg, until ctx is done.
func Serve(ctx context.Context, cfg *config.Config, id string, logger *slog.Logger) error {
	bcfg, err := Config(cfg, id)
	if err != nil {
		return err
	}
	a, err := app.Open(ctx, bcfg, logger, app.Options{})
	if err != nil {
		return err
	}
	defer a.Close()
	_, client, err := a.Working(ctx, nil, false)
	if err != nil {
		return err
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("error starting the queue client: %w", err)
	}
	<-ctx.Done()
	stopClient(client)
	return nil
}

// stopClient stops a River client, cancelling what does not finish in a
// minute.
func stopClient(client *river.Client[pgx.Tx]) {
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := client.Stop(sctx); err != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = client.StopAndCancel(cctx)
	}
}
