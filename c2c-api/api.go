package c2capi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// MaxPageSize caps every list answer.
const MaxPageSize = 100

// Config configures the API.
type Config struct {
	Verifier *auth.Verifier
	NATS     *nats.Conn
	Logger   *slog.Logger
	// Registry answers device queries; default a NATS client. The all-in-one
	// process passes its registry to skip the network hop.
	Registry registryapi.Querier
	// CommandTimeout bounds a live request to a device; default 10 s.
	CommandTimeout time.Duration
	Now            func() time.Time
}

// API is the C2C REST API.
type API struct {
	cfg      Config
	log      *slog.Logger
	registry registryapi.Querier
	commands *commands.Client
	pub      *events.Publisher
	seq      *events.Sequencer
}

// New returns the API.
func New(cfg Config) (*API, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = registryapi.NewClient(cfg.NATS)
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, err
	}
	return &API{
		cfg:      cfg,
		log:      cfg.Logger.With("service", "c2c-api"),
		registry: cfg.Registry,
		commands: commands.NewClient(cfg.NATS),
		pub:      events.NewPublisher(js),
		seq:      events.NewSequencer(cfg.Now),
	}, nil
}

// route is one endpoint; the table is also what the OpenAPI test checks.
type route struct {
	pattern string
	scope   string
	handler func(*API, http.ResponseWriter, *http.Request)
}

var routes = []route{
	{"GET /api/v1/devices", auth.ScopeReadDeviceInformation, (*API).listDevices},
	{"GET /api/v1/devices/{id}", auth.ScopeReadDeviceInformation, (*API).getDevice},
	{"DELETE /api/v1/devices/{id}", auth.ScopeWriteResources, (*API).deleteDevice},
	{"GET /api/v1/devices/{id}/{href...}", auth.ScopeReadResources, (*API).getResource},
	{"POST /api/v1/devices/{id}/{href...}", auth.ScopeWriteResources, (*API).updateResource},
	{"PUT /api/v1/devices/{id}/{href...}", auth.ScopeWriteResources, (*API).createResource},
	{"DELETE /api/v1/devices/{id}/{href...}", auth.ScopeWriteResources, (*API).deleteResource},
}

// Register adds the API's routes, its OpenAPI document and help browser to mux.
func (a *API) Register(mux *http.ServeMux) {
	for _, rt := range routes {
		h := rt.handler
		mux.Handle(rt.pattern, a.cfg.Verifier.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(a, w, r) }), rt.scope))
	}
	registerDocs(mux)
}

// Ready reports whether the API can reach the registry.
func (a *API) Ready() bool { return a.cfg.NATS.IsConnected() }

func callerOf(r *http.Request) registryapi.Caller {
	c := auth.FromContext(r.Context())
	return registryapi.Caller{UserID: c.Subject, Admin: c.IsAdmin()}
}
