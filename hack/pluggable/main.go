// A Dapr pluggable state store for tests: a components-contrib state store (in-memory or Redis) served
// over the pluggable component protocol (dapr.proto.components.v1) on a Unix socket, the way daprd
// and statestore-sidecar load one. Each component instance (the x-component-instance header daprd
// sends) gets its own store, created by Init (again only when its metadata changes). hack/pluggable/build.sh builds it; it is not part of
// the statestore-operator module.
//
// Usage: contrib-pluggable -socket /tmp/dapr-components-sockets/memstore.sock [-store in-memory|redis]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
	inmemory "github.com/dapr/components-contrib/state/in-memory"
	"github.com/dapr/components-contrib/state/query"
	"github.com/dapr/components-contrib/state/redis"
	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"github.com/dapr/kit/logger"
)

const instanceHeader = "x-component-instance"

var constructors = map[string]func(logger.Logger) state.Store{
	"in-memory": inmemory.NewInMemoryStateStore,
	"redis":     redis.NewRedisStateStore,
}

// instances holds one store per component instance; Init replaces the one of its name.
type instances struct {
	mu     sync.RWMutex
	stores map[string]state.Store
	props  map[string]string // the metadata each instance was made with, as JSON
	create func(logger.Logger) state.Store
	log    logger.Logger
}

func instanceName(ctx context.Context) string {
	md, _ := grpcmd.FromIncomingContext(ctx)
	if v := md.Get(instanceHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (in *instances) get(ctx context.Context) (state.Store, error) {
	name := instanceName(ctx)
	in.mu.RLock()
	defer in.mu.RUnlock()
	s, ok := in.stores[name]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "component instance %q is not initialized", name)
	}
	return s, nil
}

// toStatus renders a store error with the pluggable protocol's conventions: etag errors carry a
// BadRequest field violation on "etag"; the rest are INTERNAL.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var etagErr *state.ETagError
	if errors.As(err, &etagErr) {
		code := codes.FailedPrecondition
		if etagErr.Kind() == state.ETagInvalid {
			code = codes.InvalidArgument
		}
		st, derr := status.New(code, err.Error()).WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "etag", Description: err.Error()}},
		})
		if derr != nil {
			return status.Error(code, err.Error())
		}
		return st.Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

func etagOf(e *proto.Etag) *string {
	if e == nil {
		return nil
	}
	v := e.GetValue()
	return &v
}

func toEtag(v *string) *proto.Etag {
	if v == nil {
		return nil
	}
	return &proto.Etag{Value: *v}
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func strOf(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

var consistencies = map[proto.StateOptions_StateConsistency]string{
	proto.StateOptions_CONSISTENCY_EVENTUAL: state.Eventual,
	proto.StateOptions_CONSISTENCY_STRONG:   state.Strong,
}

var concurrencies = map[proto.StateOptions_StateConcurrency]string{
	proto.StateOptions_CONCURRENCY_FIRST_WRITE: state.FirstWrite,
	proto.StateOptions_CONCURRENCY_LAST_WRITE:  state.LastWrite,
}

func fromSet(r *proto.SetRequest) state.SetRequest {
	return state.SetRequest{
		Key:         r.GetKey(),
		Value:       r.GetValue(),
		ETag:        etagOf(r.GetEtag()),
		Metadata:    r.GetMetadata(),
		ContentType: strOrNil(r.GetContentType()),
		Options: state.SetStateOption{
			Concurrency: concurrencies[r.GetOptions().GetConcurrency()],
			Consistency: consistencies[r.GetOptions().GetConsistency()],
		},
	}
}

func fromDelete(r *proto.DeleteRequest) state.DeleteRequest {
	return state.DeleteRequest{
		Key:      r.GetKey(),
		ETag:     etagOf(r.GetEtag()),
		Metadata: r.GetMetadata(),
		Options: state.DeleteStateOption{
			Concurrency: concurrencies[r.GetOptions().GetConcurrency()],
			Consistency: consistencies[r.GetOptions().GetConsistency()],
		},
	}
}

func fromGet(r *proto.GetRequest) state.GetRequest {
	return state.GetRequest{
		Key:      r.GetKey(),
		Metadata: r.GetMetadata(),
		Options:  state.GetStateOption{Consistency: consistencies[r.GetConsistency()]},
	}
}

type stateServer struct {
	proto.UnimplementedStateStoreServer
	*instances
}

func (s *stateServer) Init(ctx context.Context, req *proto.InitRequest) (*proto.InitResponse, error) {
	name := instanceName(ctx)
	props := req.GetMetadata().GetProperties()
	key, _ := json.Marshal(props) // map keys are sorted: one text per set of properties
	s.mu.Lock()
	defer s.mu.Unlock()
	// Init again with the same metadata (a client reconnecting, or two clients of one component)
	// shares the instance, as they would share a database; other metadata makes a new store.
	if s.props[name] == string(key) {
		return &proto.InitResponse{}, nil
	}
	store := s.create(s.log)
	md := state.Metadata{Base: metadata.Base{Name: name, Properties: props}}
	if err := store.Init(ctx, md); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	old := s.stores[name]
	s.stores[name] = store
	s.props[name] = string(key)
	if closer, ok := old.(interface{ Close() error }); ok {
		_ = closer.Close()
	}
	return &proto.InitResponse{}, nil
}

func (s *stateServer) Features(ctx context.Context, _ *proto.FeaturesRequest) (*proto.FeaturesResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		// Features before Init: those of the store type.
		store = s.create(s.log)
	}
	var names []string
	for _, f := range store.Features() {
		names = append(names, string(f))
	}
	return &proto.FeaturesResponse{Features: names}, nil
}

func (s *stateServer) Ping(ctx context.Context, _ *proto.PingRequest) (*proto.PingResponse, error) {
	// A store without a health check of its own (in-memory) is healthy while it answers.
	if store, err := s.get(ctx); err == nil {
		if pinger, ok := store.(interface{ Ping(context.Context) error }); ok {
			if err := pinger.Ping(ctx); err != nil {
				return nil, status.Error(codes.Unavailable, err.Error())
			}
		}
	}
	return &proto.PingResponse{}, nil
}

func (s *stateServer) Get(ctx context.Context, req *proto.GetRequest) (*proto.GetResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	r := fromGet(req)
	resp, err := store.Get(ctx, &r)
	if err != nil {
		return nil, toStatus(err)
	}
	if resp == nil {
		return &proto.GetResponse{}, nil
	}
	return &proto.GetResponse{
		Data: resp.Data, Etag: toEtag(resp.ETag), Metadata: resp.Metadata, ContentType: strOf(resp.ContentType),
	}, nil
}

func (s *stateServer) Set(ctx context.Context, req *proto.SetRequest) (*proto.SetResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	r := fromSet(req)
	return &proto.SetResponse{}, toStatus(store.Set(ctx, &r))
}

func (s *stateServer) Delete(ctx context.Context, req *proto.DeleteRequest) (*proto.DeleteResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	r := fromDelete(req)
	return &proto.DeleteResponse{}, toStatus(store.Delete(ctx, &r))
}

func (s *stateServer) BulkGet(ctx context.Context, req *proto.BulkGetRequest) (*proto.BulkGetResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	reqs := make([]state.GetRequest, len(req.GetItems()))
	for i, item := range req.GetItems() {
		reqs[i] = fromGet(item)
	}
	resps, err := store.BulkGet(ctx, reqs, state.BulkGetOpts{Parallelism: int(req.GetOptions().GetParallelism())})
	if err != nil {
		return nil, toStatus(err)
	}
	items := make([]*proto.BulkStateItem, len(resps))
	for i, r := range resps {
		items[i] = &proto.BulkStateItem{
			Key: r.Key, Data: r.Data, Etag: toEtag(r.ETag), Error: r.Error, Metadata: r.Metadata,
			ContentType: strOf(r.ContentType),
		}
	}
	return &proto.BulkGetResponse{Items: items}, nil
}

func (s *stateServer) BulkSet(ctx context.Context, req *proto.BulkSetRequest) (*proto.BulkSetResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	reqs := make([]state.SetRequest, len(req.GetItems()))
	for i, item := range req.GetItems() {
		reqs[i] = fromSet(item)
	}
	opts := state.BulkStoreOpts{Parallelism: int(req.GetOptions().GetParallelism())}
	return &proto.BulkSetResponse{}, toStatus(store.BulkSet(ctx, reqs, opts))
}

func (s *stateServer) BulkDelete(ctx context.Context, req *proto.BulkDeleteRequest) (*proto.BulkDeleteResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	reqs := make([]state.DeleteRequest, len(req.GetItems()))
	for i, item := range req.GetItems() {
		reqs[i] = fromDelete(item)
	}
	opts := state.BulkStoreOpts{Parallelism: int(req.GetOptions().GetParallelism())}
	return &proto.BulkDeleteResponse{}, toStatus(store.BulkDelete(ctx, reqs, opts))
}

type transactionServer struct {
	proto.UnimplementedTransactionalStateStoreServer
	*instances
}

func (s *transactionServer) Transact(ctx context.Context, req *proto.TransactionalStateRequest) (*proto.TransactionalStateResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	tx, ok := store.(state.TransactionalStore)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "the store does not support transactions")
	}
	ops := make([]state.TransactionalStateOperation, 0, len(req.GetOperations()))
	for _, op := range req.GetOperations() {
		switch {
		case op.GetSet() != nil:
			ops = append(ops, fromSet(op.GetSet()))
		case op.GetDelete() != nil:
			ops = append(ops, fromDelete(op.GetDelete()))
		default:
			return nil, status.Error(codes.InvalidArgument, "a transaction operation is neither set nor delete")
		}
	}
	err = tx.Multi(ctx, &state.TransactionalStateRequest{Operations: ops, Metadata: req.GetMetadata()})
	return &proto.TransactionalStateResponse{}, toStatus(err)
}

type queryServer struct {
	proto.UnimplementedQueriableStateStoreServer
	*instances
}

func (s *queryServer) Query(ctx context.Context, req *proto.QueryRequest) (*proto.QueryResponse, error) {
	store, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	querier, ok := store.(state.Querier)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "the store does not support queries")
	}
	// The filter arrives as JSON in Any values (as daprd sends it); the query language's own JSON
	// form parses it back into a query.
	filter := map[string]json.RawMessage{}
	for k, v := range req.GetQuery().GetFilter() {
		filter[k] = v.GetValue()
	}
	type sorting struct {
		Key   string `json:"key"`
		Order string `json:"order,omitempty"`
	}
	sorts := []sorting{}
	for _, srt := range req.GetQuery().GetSort() {
		sorts = append(sorts, sorting{Key: srt.GetKey(), Order: srt.GetOrder().String()})
	}
	doc, err := json.Marshal(map[string]any{
		"filter": filter,
		"sort":   sorts,
		"page": map[string]any{
			"limit": req.GetQuery().GetPagination().GetLimit(),
			"token": req.GetQuery().GetPagination().GetToken(),
		},
	})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	var q query.Query
	if err := json.Unmarshal(doc, &q); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp, err := querier.Query(ctx, &state.QueryRequest{Query: q, Metadata: req.GetMetadata()})
	if err != nil {
		return nil, toStatus(err)
	}
	items := make([]*proto.QueryItem, len(resp.Results))
	for i, r := range resp.Results {
		items[i] = &proto.QueryItem{
			Key: r.Key, Data: r.Data, Etag: toEtag(r.ETag), Error: r.Error, ContentType: strOf(r.ContentType),
		}
	}
	return &proto.QueryResponse{Items: items, Token: resp.Token, Metadata: resp.Metadata}, nil
}

func main() {
	socket := flag.String("socket", "", "the Unix socket to serve on (its file name, less the extension, is the component type)")
	storeName := flag.String("store", "in-memory", "the components-contrib state store: in-memory or redis")
	flag.Parse()
	create, ok := constructors[*storeName]
	if *socket == "" || !ok {
		fmt.Fprintln(os.Stderr, "usage: contrib-pluggable -socket PATH [-store in-memory|redis]")
		os.Exit(2)
	}
	log := logger.NewLogger("contrib-pluggable")
	in := &instances{stores: map[string]state.Store{}, props: map[string]string{}, create: create, log: log}

	if err := os.Remove(*socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("removing a stale socket: %v", err)
	}
	lis, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatalf("listening on %s: %v", *socket, err)
	}
	server := grpc.NewServer()
	proto.RegisterStateStoreServer(server, &stateServer{instances: in})
	probe := create(log)
	if _, ok := probe.(state.TransactionalStore); ok {
		proto.RegisterTransactionalStateStoreServer(server, &transactionServer{instances: in})
	}
	if _, ok := probe.(state.Querier); ok {
		proto.RegisterQueriableStateStoreServer(server, &queryServer{instances: in})
	}
	reflection.Register(server)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		server.GracefulStop()
	}()
	fmt.Fprintf(os.Stderr, "serving %s on %s\n", *storeName, *socket)
	if err := server.Serve(lis); err != nil {
		log.Fatalf("serving: %v", err)
	}
	_ = os.Remove(*socket)
}
