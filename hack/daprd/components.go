package main

import (
	"github.com/dapr/components-contrib/nameresolution/mdns"
	"github.com/dapr/components-contrib/secretstores/local/env"
	"github.com/dapr/components-contrib/secretstores/local/file"
	inmemory "github.com/dapr/components-contrib/state/in-memory"
	"github.com/dapr/components-contrib/state/mysql"
	pgv1 "github.com/dapr/components-contrib/state/postgresql/v1"
	pgv2 "github.com/dapr/components-contrib/state/postgresql/v2"
	"github.com/dapr/components-contrib/state/redis"
	"github.com/dapr/components-contrib/state/sqlite"
	"github.com/dapr/dapr/pkg/components"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	secretstoresLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

// The components this daprd knows, under the names upstream registers them: the state stores
// statestore-operator serves, the local secret stores (encryption keys come only through a
// secretKeyRef) and mDNS, the name resolver of standalone mode.
func init() {
	state := stateLoader.DefaultRegistry
	state.RegisterComponent(inmemory.NewInMemoryStateStore, "in-memory")
	state.RegisterComponent(sqlite.NewSQLiteStateStore, "sqlite")
	state.RegisterComponent(redis.NewRedisStateStore, "redis")
	state.RegisterComponent(mysql.NewMySQLStateStore, "mysql")
	// Version v1 unless a Component asks for v2, as upstream.
	state.RegisterComponentWithVersions("postgresql", components.Versioning{
		Preferred: components.VersionConstructor{Version: "v2", Constructor: pgv2.NewPostgreSQLStateStore},
		Others:    []components.VersionConstructor{{Version: "v1", Constructor: pgv1.NewPostgreSQLStateStore}},
		Default:   "v1",
	})

	secretstoresLoader.DefaultRegistry.RegisterComponent(file.NewLocalSecretStore, "local.file")
	secretstoresLoader.DefaultRegistry.RegisterComponent(env.NewEnvSecretStore, "local.env")

	nrLoader.DefaultRegistry.RegisterComponent(mdns.NewResolver, "mdns")
}
