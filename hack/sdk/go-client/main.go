// go-client runs state operations through the official Dapr Go SDK (github.com/dapr/go-sdk) against a
// Dapr gRPC endpoint, so tests can show that the Go SDK works with statestore-sidecar and with daprd.
// hack/sdk/go-client/build.sh builds it; it is not part of the statestore-operator module.
//
// Usage:
//
//	go-client [-address HOST:PORT] [-timeout 30s] < operations.jsonl
//	go-client -version
//	go-client -load get|save [-address HOST:PORT] [-store s] [-connections 16] [-concurrency 64] [-duration 10s] [-value-size 1000]
//
// Endpoint: -address, else what the SDK's NewClient uses (DAPR_GRPC_ENDPOINT, else 127.0.0.1 and
// DAPR_GRPC_PORT, default 50001). The SDK sends DAPR_API_TOKEN, when set, as the dapr-api-token header.
//
// Input: one JSON object per line. Output: one JSON object per input line, in order, on stdout.
// Every operation takes "store" and optional "metadata" (object of strings); "id" is echoed back.
// A value is given as "value" (any JSON; sent as compact JSON) or "text" (a string sent as is).
//
//	{"op":"save","store":"s","key":"k","value":{"a":1},"etag":"1","concurrency":"first-write","consistency":"strong"}
//	{"op":"save_bulk","store":"s","items":[{"key":"k","value":1,"etag":"1","concurrency":"first-write"}]}
//	{"op":"get","store":"s","key":"k","consistency":"eventual"}
//	{"op":"get_bulk","store":"s","keys":["a","b"],"parallelism":2}
//	{"op":"delete","store":"s","key":"k","etag":"1","concurrency":"first-write"}
//	{"op":"delete_bulk","store":"s","items":[{"key":"k","etag":"1"}]}
//	{"op":"transaction","store":"s","operations":[{"operation":"upsert","key":"k","value":1},{"operation":"delete","key":"j","etag":"2"}]}
//	{"op":"query","store":"s","query":{"filter":{"EQ":{"state":"CA"}}}}     (query: object or JSON string)
//	{"op":"metadata"}
//
// An "etag" of "" is sent as an empty ETag; leave it out to send none. "concurrency" is "first-write" or
// "last-write" and "consistency" "eventual" or "strong"; without them the SDK's defaults apply.
//
// Results: {"op":..., "ok":true, ...} with, by operation:
//
//	get:      "found" (the store returned data), "data" (the bytes as a string), "value" (the bytes parsed
//	          as JSON, when they are JSON), "etag", "metadata"
//	get_bulk: "items": [{"key", "found", "data", "value", "etag", "metadata", "error"}]
//	query:    "results": [{"key", "data", "value", "etag", "error"}], "token", "metadata"
//	metadata: "app_id", "components": [{"name", "type", "version", "capabilities"}], "extended"
//
// or {"op":..., "ok":false, "code":"ABORTED", "message":..., "error":..., "details":[...]}: "code" is
// the gRPC status code name (UNKNOWN for an error that carries none, INVALID_INPUT for a line this
// program cannot read), "message" the status message, "error" the SDK's whole error text, "details"
// each google.rpc.ErrorInfo as {"type","reason","domain","metadata"} and other details as {"type"}.
// Exit status: 0 once all input is read; 2 if the client cannot be created or connect.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/debug"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

const sdkModule = "github.com/dapr/go-sdk"

// item is one key's part of an operation.
type item struct {
	Key         string            `json:"key"`
	Value       json.RawMessage   `json:"value"`
	Text        *string           `json:"text"`
	Etag        *string           `json:"etag"`
	Concurrency string            `json:"concurrency"`
	Consistency string            `json:"consistency"`
	Metadata    map[string]string `json:"metadata"`
	Operation   string            `json:"operation"` // transactions: upsert or delete
}

type request struct {
	item
	ID          json.RawMessage `json:"id"`
	Op          string          `json:"op"`
	Store       string          `json:"store"`
	Keys        []string        `json:"keys"`
	Parallelism int32           `json:"parallelism"`
	Items       []item          `json:"items"`
	Operations  []item          `json:"operations"`
	Query       json.RawMessage `json:"query"`
}

type result map[string]any

// inputError is a line this program cannot turn into an SDK call.
type inputError struct{ msg string }

func (e inputError) Error() string { return e.msg }

func badInput(format string, args ...any) error { return inputError{fmt.Sprintf(format, args...)} }

func main() {
	address := flag.String("address", "", "Dapr gRPC endpoint (default: DAPR_GRPC_ENDPOINT, else 127.0.0.1:$DAPR_GRPC_PORT)")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of each operation")
	version := flag.Bool("version", false, "print the Go SDK version and exit")
	load := flag.String("load", "", "get or save: a closed loop of calls instead of operations from stdin (load.go)")
	store := flag.String("store", "store", "load: the state store")
	connections := flag.Int("connections", 16, "load: gRPC connections")
	concurrency := flag.Int("concurrency", 64, "load: callers, spread over the connections")
	duration := flag.Duration("duration", 10*time.Second, "load: how long to call")
	valueSize := flag.Int("value-size", 1000, "load: bytes of the saved JSON string")
	flag.Parse()
	if *version {
		fmt.Println("go-client", sdkModule, sdkVersion())
		return
	}
	if *load != "" {
		dapr.SetLogger(log.New(io.Discard, "", 0)) // one "initializing" line per connection otherwise
		settings := loadSettings{*load, *address, *store, *connections, *concurrency, *duration, *valueSize}
		if err := runLoad(settings); err != nil {
			fmt.Fprintln(os.Stderr, "go-client:", err)
			os.Exit(2)
		}
		return
	}

	out := json.NewEncoder(os.Stdout)
	dapr.SetLogger(log.New(os.Stderr, "", 0)) // the SDK logs to stdout by default; stdout is for results
	client, err := connect(*address)
	if err != nil {
		_ = out.Encode(failure(result{"op": "connect"}, err))
		os.Exit(2)
	}
	defer client.Close()

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		var req request
		var res result
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			res = failure(result{"op": nil}, badInput("not a JSON object: %v", err))
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			res = run(ctx, client, &req)
			cancel()
		}
		if err := out.Encode(res); err != nil {
			os.Exit(1) // stdout is gone: nobody reads the results
		}
	}
	if err := in.Err(); err != nil {
		_ = out.Encode(failure(result{"op": nil}, badInput("reading input: %v", err)))
	}
}

func sdkVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == sdkModule {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func connect(address string) (dapr.Client, error) {
	if address != "" {
		return dapr.NewClientWithAddressContext(context.Background(), address)
	}
	return dapr.NewClient()
}

func run(ctx context.Context, c dapr.Client, req *request) result {
	res := result{"op": req.Op}
	if req.ID != nil {
		res["id"] = req.ID
	}
	var err error
	switch req.Op {
	case "save":
		err = save(ctx, c, req)
	case "save_bulk":
		err = saveBulk(ctx, c, req)
	case "get":
		err = get(ctx, c, req, res)
	case "get_bulk":
		err = getBulk(ctx, c, req, res)
	case "delete":
		err = del(ctx, c, req)
	case "delete_bulk":
		err = deleteBulk(ctx, c, req)
	case "transaction":
		err = transaction(ctx, c, req)
	case "query":
		err = query(ctx, c, req, res)
	case "metadata":
		err = metadata(ctx, c, res)
	default:
		err = badInput("unknown op %q", req.Op)
	}
	if err != nil {
		return failure(res, err)
	}
	res["ok"] = true
	return res
}

func failure(res result, err error) result {
	res["ok"] = false
	res["error"] = err.Error()
	var bad inputError
	if errors.As(err, &bad) {
		res["code"] = "INVALID_INPUT"
		return res
	}
	// The SDK wraps the gRPC error ("error saving state: %w"); the status is the wrapped one.
	var grpcErr interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &grpcErr) {
		res["code"] = "UNKNOWN"
		return res
	}
	st := grpcErr.GRPCStatus()
	res["code"] = codeName(st.Code().String())
	res["message"] = st.Message()
	details := []result{}
	for _, d := range st.Details() {
		switch info := d.(type) {
		case *errdetails.ErrorInfo:
			details = append(details, result{
				"type": "google.rpc.ErrorInfo", "reason": info.GetReason(),
				"domain": info.GetDomain(), "metadata": info.GetMetadata(),
			})
		default:
			details = append(details, result{"type": fmt.Sprintf("%T", d)})
		}
	}
	res["details"] = details
	return res
}

// codeName turns grpc-go's code names (Aborted, InvalidArgument) into the canonical ones (ABORTED,
// INVALID_ARGUMENT) that other gRPC implementations print.
func codeName(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// data is the bytes an item stores: "text" as is, else "value" as compact JSON (whatever spacing the
// caller's encoder used).
func data(it *item) []byte {
	if it.Text != nil {
		return []byte(*it.Text)
	}
	if it.Value == nil {
		return []byte("null")
	}
	var compact bytes.Buffer
	if json.Compact(&compact, it.Value) != nil {
		return it.Value // cannot happen: the line was decoded as JSON
	}
	return compact.Bytes()
}

func options(it *item) (*dapr.StateOptions, error) {
	if it.Concurrency == "" && it.Consistency == "" {
		return nil, nil
	}
	so := &dapr.StateOptions{}
	switch it.Concurrency {
	case "":
	case "first-write":
		so.Concurrency = dapr.StateConcurrencyFirstWrite
	case "last-write":
		so.Concurrency = dapr.StateConcurrencyLastWrite
	default:
		return nil, badInput("concurrency must be first-write or last-write, not %q", it.Concurrency)
	}
	switch it.Consistency {
	case "":
	case "eventual":
		so.Consistency = dapr.StateConsistencyEventual
	case "strong":
		so.Consistency = dapr.StateConsistencyStrong
	default:
		return nil, badInput("consistency must be eventual or strong, not %q", it.Consistency)
	}
	return so, nil
}

func etag(it *item) *dapr.ETag {
	if it.Etag == nil {
		return nil
	}
	return &dapr.ETag{Value: *it.Etag}
}

// setItem is the SDK's item for a save, a bulk delete or a transaction operation.
func setItem(it *item) (*dapr.SetStateItem, error) {
	so, err := options(it)
	if err != nil {
		return nil, err
	}
	return &dapr.SetStateItem{Key: it.Key, Value: data(it), Etag: etag(it), Metadata: it.Metadata, Options: so}, nil
}

func save(ctx context.Context, c dapr.Client, req *request) error {
	so, err := options(&req.item)
	if err != nil {
		return err
	}
	var opts []dapr.StateOption
	if so != nil {
		opts = append(opts, dapr.WithConcurrency(so.Concurrency), dapr.WithConsistency(so.Consistency))
	}
	if req.Etag != nil && *req.Etag == "" {
		// SaveStateWithETag drops an empty ETag; send one explicitly.
		it, err := setItem(&req.item)
		if err != nil {
			return err
		}
		return c.SaveBulkState(ctx, req.Store, it)
	}
	if req.Etag != nil {
		return c.SaveStateWithETag(ctx, req.Store, req.Key, data(&req.item), *req.Etag, req.Metadata, opts...)
	}
	return c.SaveState(ctx, req.Store, req.Key, data(&req.item), req.Metadata, opts...)
}

func saveBulk(ctx context.Context, c dapr.Client, req *request) error {
	items := make([]*dapr.SetStateItem, 0, len(req.Items))
	for i := range req.Items {
		it, err := setItem(&req.Items[i])
		if err != nil {
			return err
		}
		items = append(items, it)
	}
	return c.SaveBulkState(ctx, req.Store, items...)
}

// describe adds what a store returned for one key.
func describe(res result, value []byte, tag string, meta map[string]string) {
	res["found"] = len(value) > 0 // gRPC cannot tell empty data from none
	res["data"] = string(value)
	if json.Valid(value) {
		res["value"] = json.RawMessage(value)
	}
	res["etag"] = tag
	res["metadata"] = meta
}

func get(ctx context.Context, c dapr.Client, req *request, res result) error {
	var (
		it  *dapr.StateItem
		err error
	)
	switch req.Consistency {
	case "":
		it, err = c.GetState(ctx, req.Store, req.Key, req.Metadata)
	case "eventual":
		it, err = c.GetStateWithConsistency(ctx, req.Store, req.Key, req.Metadata, dapr.StateConsistencyEventual)
	case "strong":
		it, err = c.GetStateWithConsistency(ctx, req.Store, req.Key, req.Metadata, dapr.StateConsistencyStrong)
	default:
		return badInput("consistency must be eventual or strong, not %q", req.Consistency)
	}
	if err != nil {
		return err
	}
	describe(res, it.Value, it.Etag, it.Metadata)
	return nil
}

func getBulk(ctx context.Context, c dapr.Client, req *request, res result) error {
	items, err := c.GetBulkState(ctx, req.Store, req.Keys, req.Metadata, req.Parallelism)
	if err != nil {
		return err
	}
	out := make([]result, 0, len(items))
	for _, it := range items {
		r := result{"key": it.Key, "error": it.Error}
		describe(r, it.Value, it.Etag, it.Metadata)
		out = append(out, r)
	}
	res["items"] = out
	return nil
}

func del(ctx context.Context, c dapr.Client, req *request) error {
	so, err := options(&req.item)
	if err != nil {
		return err
	}
	return c.DeleteStateWithETag(ctx, req.Store, req.Key, etag(&req.item), req.Metadata, so)
}

func deleteBulk(ctx context.Context, c dapr.Client, req *request) error {
	items := make([]*dapr.DeleteStateItem, 0, len(req.Items)+len(req.Keys))
	for _, key := range req.Keys {
		items = append(items, &dapr.DeleteStateItem{Key: key, Metadata: req.Metadata})
	}
	for i := range req.Items {
		it, err := setItem(&req.Items[i])
		if err != nil {
			return err
		}
		it.Value = nil
		items = append(items, (*dapr.DeleteStateItem)(it))
	}
	return c.DeleteBulkStateItems(ctx, req.Store, items)
}

func transaction(ctx context.Context, c dapr.Client, req *request) error {
	ops := make([]*dapr.StateOperation, 0, len(req.Operations))
	for i := range req.Operations {
		op := &req.Operations[i]
		it, err := setItem(op)
		if err != nil {
			return err
		}
		switch op.Operation {
		case "upsert":
			ops = append(ops, &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: it})
		case "delete":
			it.Value = nil
			ops = append(ops, &dapr.StateOperation{Type: dapr.StateOperationTypeDelete, Item: it})
		default:
			return badInput("operation must be upsert or delete, not %q", op.Operation)
		}
	}
	return c.ExecuteStateTransaction(ctx, req.Store, req.Metadata, ops)
}

func query(ctx context.Context, c dapr.Client, req *request, res result) error {
	q := string(req.Query)
	var s string
	if json.Unmarshal(req.Query, &s) == nil {
		q = s // the query given as a JSON string
	}
	resp, err := c.QueryStateAlpha1(ctx, req.Store, q, req.Metadata)
	if err != nil {
		return err
	}
	results := make([]result, 0, len(resp.Results))
	for _, it := range resp.Results {
		r := result{"key": it.Key, "error": it.Error}
		describe(r, it.Value, it.Etag, nil)
		delete(r, "metadata")
		results = append(results, r)
	}
	res["results"] = results
	res["token"] = resp.Token
	res["metadata"] = resp.Metadata
	return nil
}

func metadata(ctx context.Context, c dapr.Client, res result) error {
	md, err := c.GetMetadata(ctx)
	if err != nil {
		return err
	}
	components := make([]result, 0, len(md.RegisteredComponents))
	for _, comp := range md.RegisteredComponents {
		components = append(components, result{
			"name": comp.Name, "type": comp.Type, "version": comp.Version, "capabilities": comp.Capabilities,
		})
	}
	res["app_id"] = md.ID
	res["components"] = components
	res["extended"] = md.ExtendedMetadata
	return nil
}
