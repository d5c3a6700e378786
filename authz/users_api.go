package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
)

// firstPartyClients are the clients whose user tokens may use the management
// API (users, apps, app tokens, audit). A registered app acting for its user
// may read devices but must not register apps, reveal secrets or issue
// tokens: that would let one leaked app secret mint others.
var firstPartyClients = []string{clientCLI, clientPortal}

// requireUser returns the active user behind the Bearer token of r (the
// handler runs behind Verifier.Require) or answers the problem itself.
func (s *Server) requireUser(w http.ResponseWriter, r *http.Request) (*user, bool) {
	c := auth.FromContext(r.Context())
	if c == nil {
		httpx.WriteProblem(w, http.StatusUnauthorized, "a Bearer token is required")
		return nil, false
	}
	if c.DeviceID != "" || !slices.Contains(firstPartyClients, c.ClientID) {
		httpx.WriteProblem(w, http.StatusForbidden, "the management API needs a user token of ocfcloud's own clients, not an app or device token")
		return nil, false
	}
	u, err := s.activeUser(r.Context(), c.Subject)
	if errors.Is(err, errUnauthenticated) {
		httpx.WriteProblem(w, http.StatusForbidden, "the user is disabled or deleted")
		return nil, false
	}
	if err != nil {
		s.problemInternal(w, r, "find caller", err)
		return nil, false
	}
	return u, true
}

// requireAdmin is requireUser for administrators; the role is read from the
// database, not the token, so a demotion counts at once.
func (s *Server) requireAdmin(w http.ResponseWriter, r *http.Request) (*user, bool) {
	u, ok := s.requireUser(w, r)
	if !ok {
		return nil, false
	}
	if u.Role != auth.RoleAdmin {
		httpx.WriteProblem(w, http.StatusForbidden, "only administrators may do this")
		return nil, false
	}
	return u, true
}

const maxJSONBody = 64 << 10

// decodeJSON reads r's JSON body into v, refusing unknown fields, or answers
// the problem itself.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		httpx.WriteProblem(w, http.StatusUnsupportedMediaType, "the body must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpx.WriteProblem(w, http.StatusBadRequest, "the body is not valid JSON for this request: "+err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		httpx.WriteProblem(w, http.StatusBadRequest, "the body must hold one JSON object")
		return false
	}
	return true
}

// UserView is a user as the management API shows it.
type UserView struct {
	ID        string    `json:"id"`
	Username  string    `json:"username"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"createdAt"`
}

func viewUser(u *user) UserView {
	return UserView{ID: u.ID, Username: u.Username, Role: u.Role, Disabled: u.Disabled, CreatedAt: u.CreatedAt}
}

type createUserRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

func (s *Server) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	admin, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	var req createUserRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Role == "" {
		req.Role = RoleUser
	}
	id, err := s.CreateUser(r.Context(), req.Username, req.Password, req.Role)
	switch {
	case errors.Is(err, ErrUserExists):
		httpx.WriteProblem(w, http.StatusConflict, "a user with this username exists")
		return
	case errors.Is(err, errInvalidUser):
		httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		s.problemInternal(w, r, "create user", err)
		return
	}
	s.audit(AuditEvent{Type: AuditUserCreated, Success: true, UserID: id, ActorID: admin.ID, SourceIP: clientIP(r), Detail: "role " + req.Role})
	u, err := s.findUser(r.Context(), id)
	if err != nil {
		s.problemInternal(w, r, "create user", err)
		return
	}
	w.Header().Set("Location", s.cfg.Issuer+usersPath+"/"+id)
	httpx.WriteJSON(w, http.StatusCreated, viewUser(u))
}

const maxUsersListed = 1000

func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.requireAdmin(w, r); !ok {
		return
	}
	us, err := findAll[user](r.Context(), s.users, bson.M{}, options.Find().SetSort(bson.D{{Key: "username", Value: 1}}).SetLimit(maxUsersListed))
	if err != nil {
		s.problemInternal(w, r, "list users", err)
		return
	}
	out := make([]UserView, 0, len(us))
	for i := range us {
		out = append(out, viewUser(&us[i]))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.requireUser(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if caller.ID != id && caller.Role != auth.RoleAdmin {
		httpx.WriteProblem(w, http.StatusNotFound, "no such user")
		return
	}
	u, err := s.findUser(r.Context(), id)
	if errors.Is(err, mongo.ErrNoDocuments) {
		httpx.WriteProblem(w, http.StatusNotFound, "no such user")
		return
	}
	if err != nil {
		s.problemInternal(w, r, "get user", err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, viewUser(u))
}

type updateUserRequest struct {
	Role     *string `json:"role"`
	Disabled *bool   `json:"disabled"`
	Password *string `json:"password"`
}

// handleUpdateUser changes role, disabled state or password. Disabling a
// user or changing the role revokes every token the user holds, so the
// change counts on the next call everywhere (role is a token claim).
func (s *Server) handleUpdateUser(w http.ResponseWriter, r *http.Request) {
	admin, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	var req updateUserRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	ctx := r.Context()
	u, err := s.findUser(ctx, id)
	if errors.Is(err, mongo.ErrNoDocuments) {
		httpx.WriteProblem(w, http.StatusNotFound, "no such user")
		return
	}
	if err != nil {
		s.problemInternal(w, r, "update user", err)
		return
	}
	set := bson.M{}
	var problems []error
	revoke := false
	if req.Role != nil && *req.Role != u.Role {
		switch {
		case *req.Role != auth.RoleAdmin && *req.Role != RoleUser:
			problems = append(problems, fmt.Errorf("role must be %q or %q", auth.RoleAdmin, RoleUser))
		case u.ID == admin.ID:
			problems = append(problems, errors.New("administrators cannot change their own role"))
		default:
			set["role"], revoke = *req.Role, true
		}
	}
	if req.Disabled != nil && *req.Disabled != u.Disabled {
		if u.ID == admin.ID {
			problems = append(problems, errors.New("administrators cannot disable themselves"))
		} else {
			set["disabled"] = *req.Disabled
			revoke = revoke || *req.Disabled
		}
	}
	if req.Password != nil {
		if len(*req.Password) < minPasswordLen || len(*req.Password) > maxPasswordLen {
			problems = append(problems, fmt.Errorf("password must have %d to %d characters", minPasswordLen, maxPasswordLen))
		} else if h, err := hashPassword(*req.Password); err != nil {
			s.problemInternal(w, r, "update user", err)
			return
		} else {
			set["password_hash"] = h
		}
	}
	if err := errors.Join(problems...); err != nil {
		httpx.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(set) > 0 {
		now := s.now()
		if revoke {
			set["tokens_valid_after"] = now.UTC()
		}
		if _, err := s.users.UpdateOne(ctx, bson.M{"_id": id}, bson.M{"$set": set}); err != nil {
			s.problemInternal(w, r, "update user", err)
			return
		}
		s.userCache.forget(id)
		if revoke {
			if err := s.revokeUser(ctx, id, now); err != nil {
				s.problemInternal(w, r, "revoke user tokens", err)
				return
			}
		}
		fields := make([]string, 0, len(set))
		for k := range set {
			if k != "tokens_valid_after" && k != "password_hash" {
				fields = append(fields, fmt.Sprintf("%s=%v", k, set[k]))
			} else if k == "password_hash" {
				fields = append(fields, "password changed")
			}
		}
		slices.Sort(fields)
		s.audit(AuditEvent{Type: AuditUserUpdated, Success: true, UserID: id, ActorID: admin.ID, SourceIP: clientIP(r), Detail: fmt.Sprint(fields)})
	}
	if u, err = s.findUser(ctx, id); err != nil {
		s.problemInternal(w, r, "update user", err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, viewUser(u))
}

func (s *Server) findUser(ctx context.Context, id string) (*user, error) {
	var u user
	if err := s.users.FindOne(ctx, bson.M{"_id": id}).Decode(&u); err != nil {
		return nil, err
	}
	return &u, nil
}
