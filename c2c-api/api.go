package c2capi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

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
	// DB stores event subscriptions; without it the subscription routes
	// answer 503 and no webhooks are delivered.
	DB *mongo.Database
	// Webhooks configures subscriptions and webhook delivery.
	Webhooks WebhookConfig
}

// API is the C2C REST API.
type API struct {
	cfg      Config
	log      *slog.Logger
	registry registryapi.Querier
	commands *commands.Client
	reprs    reprCache // JSON of CBOR representations
	pub      *events.Publisher
	seq      *events.Sequencer
	webhooks *Dispatcher
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
	a := &API{
		cfg:      cfg,
		log:      cfg.Logger.With("service", "c2c-api"),
		registry: cfg.Registry,
		commands: commands.NewClient(cfg.NATS),
		pub:      events.NewPublisher(js),
		seq:      events.NewSequencer(cfg.Now),
	}
	if err := a.startWebhooks(); err != nil {
		return nil, err
	}
	return a, nil
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
	// {href...} must end a pattern, so these also carry the resource-level
	// subscription paths (.../{href}/subscriptions[/{subId}]); their scope
	// depends on the path and the handler checks it.
	{"GET /api/v1/devices/{id}/{href...}", scopeByPath, (*API).resourceGetRoute},
	{"POST /api/v1/devices/{id}/{href...}", scopeByPath, (*API).resourcePostRoute},
	{"PUT /api/v1/devices/{id}/{href...}", scopeByPath, (*API).resourcePutRoute},
	{"DELETE /api/v1/devices/{id}/{href...}", scopeByPath, (*API).resourceDeleteRoute},
	{"POST /api/v1/devices/subscriptions", auth.ScopeWriteSubscriptions, (*API).subscribeDevices},
	{"GET /api/v1/devices/subscriptions/{subId}", auth.ScopeWriteSubscriptions, (*API).getDevicesSubscription},
	{"DELETE /api/v1/devices/subscriptions/{subId}", auth.ScopeWriteSubscriptions, (*API).deleteDevicesSubscription},
	{"POST /api/v1/devices/{id}/subscriptions", auth.ScopeWriteSubscriptions, (*API).subscribeDevice},
	{"GET /api/v1/devices/{id}/subscriptions/{subId}", auth.ScopeWriteSubscriptions, (*API).getDeviceSubscription},
	{"DELETE /api/v1/devices/{id}/subscriptions/{subId}", auth.ScopeWriteSubscriptions, (*API).deleteDeviceSubscription},
	{"GET /api/v1/subscriptions", auth.ScopeWriteSubscriptions, (*API).listSubscriptions},
}

// scopeByPath marks a route whose handler checks the scope itself.
const scopeByPath = ""

// Register adds the API's routes, its OpenAPI document and help browser to mux.
func (a *API) Register(mux *http.ServeMux) {
	for _, rt := range routes {
		h := rt.handler
		var scopes []string
		if rt.scope != scopeByPath {
			scopes = []string{rt.scope}
		}
		mux.Handle(rt.pattern, a.cfg.Verifier.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(a, w, r) }), scopes...))
	}
	registerDocs(mux)
}

// Ready reports whether the API can reach the registry.
func (a *API) Ready() bool { return a.cfg.NATS.IsConnected() }

func callerOf(r *http.Request) registryapi.Caller {
	c := auth.FromContext(r.Context())
	return registryapi.Caller{UserID: c.Subject, Admin: c.IsAdmin()}
}
