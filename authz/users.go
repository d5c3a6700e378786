package authz

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// RoleUser is the role of ordinary users, who see only their own devices.
const RoleUser = "user"

const adminUsername = "admin"

// ErrUserExists means a user with that username already exists.
var ErrUserExists = errors.New("user already exists")

// errUnauthenticated means the username or password is wrong, or the user is
// disabled; callers must not tell which.
var errUnauthenticated = errors.New("invalid username or password")

type user struct {
	ID           string    `bson:"_id"`
	Username     string    `bson:"username"`
	PasswordHash string    `bson:"password_hash"`
	Role         string    `bson:"role"`
	Disabled     bool      `bson:"disabled"`
	CreatedAt    time.Time `bson:"created_at"`
	// TokensValidAfter: the user's access tokens issued at or before it are
	// revoked (disabled, or the role changed).
	TokensValidAfter time.Time `bson:"tokens_valid_after,omitempty"`
}

// errInvalidUser wraps the validation problems of CreateUser.
var errInvalidUser = errors.New("invalid user")

// CreateUser creates a user with role "admin" or "user" and returns its id.
// It returns ErrUserExists when the username is taken.
func (s *Server) CreateUser(ctx context.Context, username, password, role string) (string, error) {
	var errs []error
	if username == "" || len(username) > 64 || !utf8.ValidString(username) {
		errs = append(errs, errors.New("username must be 1 to 64 bytes of UTF-8"))
	}
	if len(password) < minPasswordLen || len(password) > maxPasswordLen {
		errs = append(errs, fmt.Errorf("password must have %d to %d characters", minPasswordLen, maxPasswordLen))
	}
	if role != auth.RoleAdmin && role != RoleUser {
		errs = append(errs, fmt.Errorf("role must be %q or %q", auth.RoleAdmin, RoleUser))
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("%w: %w", errInvalidUser, err)
	}
	hash, err := hashPassword(password)
	if err != nil {
		return "", fmt.Errorf("create user %q: %w", username, err)
	}
	u := user{
		ID:           ids.New(),
		Username:     username,
		PasswordHash: hash,
		Role:         role,
		CreatedAt:    s.now().UTC(),
	}
	if _, err := s.users.InsertOne(ctx, u); err != nil {
		if mongo.IsDuplicateKeyError(err) {
			return "", fmt.Errorf("create user %q: %w", username, ErrUserExists)
		}
		return "", fmt.Errorf("create user %q: %w", username, err)
	}
	s.log.Info("user created", "user_id", u.ID, "role", role)
	return u.ID, nil
}

// authenticate returns the enabled user with that username and password. An
// unknown user costs one argon2id verification like a known one, so timing
// does not reveal which usernames exist. With errUnauthenticated it returns
// the user if the username exists (for the audit log; never show it).
func (s *Server) authenticate(ctx context.Context, username, password string) (*user, error) {
	if len(password) > maxPasswordLen {
		return nil, errUnauthenticated
	}
	var u user
	err := s.users.FindOne(ctx, bson.M{"username": username}).Decode(&u)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		_, _ = checkPassword(s.dummyHash, password)
		return nil, errUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("find user: %w", err)
	}
	ok, err := checkPassword(u.PasswordHash, password)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", u.ID, err)
	}
	if !ok || u.Disabled {
		return &u, errUnauthenticated
	}
	return &u, nil
}

// activeUser returns the user with id unless it is missing or disabled.
func (s *Server) activeUser(ctx context.Context, id string) (*user, error) {
	var u user
	err := s.users.FindOne(ctx, bson.M{"_id": id}).Decode(&u)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return nil, errUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("find user %s: %w", id, err)
	case u.Disabled:
		return nil, errUnauthenticated
	}
	return &u, nil
}

// ensureAdmin creates the user "admin" if it does not exist. It returns the
// password it generated, if any. A concurrent start that created admin first
// is not an error.
func (s *Server) ensureAdmin(ctx context.Context, password string) (string, error) {
	n, err := s.users.CountDocuments(ctx, bson.M{"username": adminUsername})
	if err != nil {
		return "", fmt.Errorf("find admin: %w", err)
	}
	if n > 0 {
		return "", nil
	}
	generated := ""
	if password == "" {
		password = randomToken(18)
		generated = password
	}
	if _, err := s.CreateUser(ctx, adminUsername, password, auth.RoleAdmin); err != nil {
		if errors.Is(err, ErrUserExists) {
			return "", nil
		}
		return "", err
	}
	return generated, nil
}
