package platform

import (
	"context"
	"time"
)

// Retry runs fn until it succeeds, for at most total. Each attempt gets its
// own 10 s deadline. It is for start-up steps against infrastructure that may
// still be settling, such as creating a replicated JetStream stream right
// after the cluster elected its leader, which can take longer than one API
// timeout on a busy machine.
func Retry(ctx context.Context, total time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(total)
	wait := 250 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}
