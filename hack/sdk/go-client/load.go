package main

// Load mode (`go-client -load get|save|bulk|transaction`): a closed loop of SDK calls for the
// benchmark's gRPC maximum, as wrk drives the HTTP one, so the Go client rather than a Python one is
// what the server races. bulk reads 100 keys in one GetBulkState; transaction upserts one key and
// deletes another in one ExecuteStateTransaction.
// `-connections` clients (one gRPC connection each) carry `-concurrency` callers in turn for
// `-duration`; one JSON line reports the calls that completed, the errors and the rate.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	dapr "github.com/dapr/go-sdk/client"
)

type loadSettings struct {
	op          string
	address     string
	store       string
	connections int
	concurrency int
	duration    time.Duration
	valueSize   int
}

func runLoad(s loadSettings) error {
	if s.op != "get" && s.op != "save" && s.op != "bulk" && s.op != "transaction" {
		return fmt.Errorf("-load takes get, save, bulk or transaction, not %q", s.op)
	}
	if s.connections < 1 || s.concurrency < 1 {
		return fmt.Errorf("-connections and -concurrency must be at least 1")
	}
	clients := make([]dapr.Client, s.connections)
	for i := range clients {
		c, err := connect(s.address)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	value := make([]byte, 0, s.valueSize+8)
	value = append(value, `{"v":"`...)
	for len(value) < s.valueSize+6 {
		value = append(value, 'x')
	}
	value = append(value, `"}`...)
	ctx := context.Background()
	if err := clients[0].SaveState(ctx, s.store, "load-key", value, nil); err != nil {
		return fmt.Errorf("first save: %w", err)
	}
	bulkKeys := make([]string, 100)
	for i := range bulkKeys {
		bulkKeys[i] = fmt.Sprintf("load-key-%d", i)
		if s.op == "bulk" {
			if err := clients[0].SaveState(ctx, s.store, bulkKeys[i], value, nil); err != nil {
				return fmt.Errorf("seeding the bulk keys: %w", err)
			}
		}
	}
	transaction := []*dapr.StateOperation{
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: "load-key", Value: value}},
		{Type: dapr.StateOperationTypeDelete, Item: &dapr.SetStateItem{Key: "load-gone"}},
	}

	var calls, failures atomic.Int64
	stop := time.Now().Add(s.duration)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < s.concurrency; i++ {
		wg.Add(1)
		go func(c dapr.Client) {
			defer wg.Done()
			for time.Now().Before(stop) {
				var err error
				switch s.op {
				case "get":
					_, err = c.GetState(ctx, s.store, "load-key", nil)
				case "save":
					err = c.SaveState(ctx, s.store, "load-key", value, nil)
				case "bulk":
					var items []*dapr.BulkStateItem
					items, err = c.GetBulkState(ctx, s.store, bulkKeys, nil, 0)
					if err == nil && len(items) != len(bulkKeys) {
						err = fmt.Errorf("bulk get returned %d items", len(items))
					}
				default:
					err = c.ExecuteStateTransaction(ctx, s.store, nil, transaction)
				}
				if err != nil {
					failures.Add(1)
				} else {
					calls.Add(1)
				}
			}
		}(clients[i%len(clients)])
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"requests": calls.Load(),
		"errors":   failures.Load(),
		"seconds":  seconds,
		"rate":     float64(calls.Load()) / seconds,
	})
}
