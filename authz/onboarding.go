package authz

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/httpx"
	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// usedSuffix marks the record of a used code: its _id is the code's hash
// with this suffix.
const usedSuffix = ":used"

type onboardingCodeDoc struct {
	Hash      string     `bson:"_id"`
	UserID    string     `bson:"user_id"`
	CreatedAt time.Time  `bson:"created_at"`
	ExpiresAt time.Time  `bson:"expires_at"`
	DeviceID  string     `bson:"device_id,omitempty"` // set on use
	UsedAt    *time.Time `bson:"used_at,omitempty"`
}

// onboardingResponse is what the portal shows and the device writes into its
// CoAPCloudConf resource.
type onboardingResponse struct {
	APN       string `json:"apn"`
	CIS       string `json:"cis"`
	CISSecure string `json:"cisSecure"`
	SID       string `json:"sid"`
	AT        string `json:"at"`
	CloudCA   string `json:"cloudCA"`
	ExpiresAt string `json:"expiresAt"`
}

// handleCreateOnboardingCode runs behind the Bearer middleware.
func (s *Server) handleCreateOnboardingCode(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c := auth.FromContext(ctx)
	if c == nil {
		httpx.WriteProblem(w, http.StatusUnauthorized, "a Bearer token is required")
		return
	}
	if c.ClientID == clientDevice || c.DeviceID != "" {
		httpx.WriteProblem(w, http.StatusForbidden, "device tokens cannot create onboarding codes")
		return
	}
	u, err := s.activeUser(ctx, c.Subject)
	if errors.Is(err, errUnauthenticated) {
		httpx.WriteProblem(w, http.StatusForbidden, "the user is disabled or deleted")
		return
	}
	if err != nil {
		s.problemInternal(w, r, "create onboarding code", err)
		return
	}
	now := s.now().UTC()
	s.sweep(ctx, now)
	code := randomToken(32)
	doc := onboardingCodeDoc{
		Hash:      hashToken(code),
		UserID:    u.ID,
		CreatedAt: now,
		ExpiresAt: now.Add(s.cfg.OnboardingCodeTTL),
	}
	if _, err := s.codes.InsertOne(ctx, doc); err != nil {
		s.problemInternal(w, r, "store onboarding code", err)
		return
	}
	s.log.InfoContext(ctx, "onboarding code created", "user_id", u.ID)
	ob := s.cfg.Onboarding
	httpx.WriteJSON(w, http.StatusCreated, onboardingResponse{
		APN:       ob.APN,
		CIS:       ob.CIS,
		CISSecure: ob.CISSecure,
		SID:       ob.CloudID,
		AT:        code,
		CloudCA:   ob.CloudCAPEM,
		ExpiresAt: doc.ExpiresAt.Format(time.RFC3339),
	})
}

// codeGrant exchanges an onboarding code for device tokens. The first
// exchange claims the code atomically and records it as used by device_id,
// so one of any number of concurrent exchanges wins, also across replicas. Devices
// retry sign-up with the same code, so a retry with the same device_id gets
// the first answer again, byte for byte, from memory.
func (s *Server) codeGrant(ctx context.Context, req tokenRequest) ([]byte, *oauthError) {
	code, deviceID := req.form.Get("code"), req.form.Get("device_id")
	if code == "" {
		return nil, invalidRequest("code is required")
	}
	if !ids.IsUUID(deviceID) {
		return nil, invalidRequest("device_id must be a UUID")
	}
	hash := hashToken(code)
	now := s.now()
	s.answers.sweep(now)
	e := s.answers.acquire(hash)
	defer s.answers.release(hash, e)

	if e.answer != nil {
		if now.Before(e.expiresAt) && sameDevice(e.deviceID, deviceID) {
			return e.answer, nil
		}
		return nil, invalidGrant("the code is unknown, expired or already used")
	}
	doc, oe := s.claimCode(ctx, hash, now)
	retried := false
	if oe != nil && oe.code == "invalid_grant" {
		// Exchanged before for this device, on another replica or before a
		// restart: the device never got that answer (the gateway answered
		// 5.03, the link dropped), so it gets new tokens while the code is
		// valid. Refusing would make it throw its credentials away.
		if used := s.usedCode(ctx, hash, deviceID, now); used != nil {
			doc, oe, retried = used, nil, true
		}
	}
	if oe != nil {
		if oe.code == "invalid_grant" {
			s.log.InfoContext(ctx, "onboarding code refused", "device_id", deviceID)
		}
		return nil, oe
	}
	body, oe := s.deviceTokens(ctx, doc.UserID, deviceID)
	if oe != nil {
		if !retried {
			// Give the code back so the device can retry; it was not answered.
			if _, err := s.codes.InsertOne(context.WithoutCancel(ctx), doc); err != nil {
				s.log.ErrorContext(ctx, "release onboarding code failed", "device_id", deviceID, "err", err)
			}
		}
		return nil, oe
	}
	e.answer, e.deviceID, e.expiresAt = body, deviceID, doc.ExpiresAt
	if retried {
		s.log.InfoContext(ctx, "repeated sign-up answered with new tokens", "user_id", doc.UserID, "device_id", deviceID)
		return body, nil
	}
	used := *doc
	// A new _id: re-inserting the claimed _id would let a concurrent claim
	// that read the code before our delete delete the used record instead
	// and count as a second winner (FerretDB deletes by _id after reading).
	used.Hash = doc.Hash + usedSuffix
	used.DeviceID = deviceID
	usedAt := now.UTC()
	used.UsedAt = &usedAt
	// The used record is for audit and for the sweep; the answer is already
	// decided, so failing to store it is only logged.
	if _, err := s.codes.InsertOne(context.WithoutCancel(ctx), used); err != nil {
		s.log.WarnContext(ctx, "record onboarding code use failed", "device_id", deviceID, "err", err)
	}
	s.log.InfoContext(ctx, "device signed up with onboarding code", "user_id", doc.UserID, "device_id", deviceID)
	return body, nil
}

// usedCode returns the record of the code with hash used by deviceID, if
// the code has not expired.
func (s *Server) usedCode(ctx context.Context, hash, deviceID string, now time.Time) *onboardingCodeDoc {
	var used onboardingCodeDoc
	if err := s.codes.FindOne(ctx, bson.M{"_id": hash + usedSuffix}).Decode(&used); err != nil {
		return nil
	}
	if !sameDevice(used.DeviceID, deviceID) || !now.Before(used.ExpiresAt) {
		return nil
	}
	return &used
}

// claimCode takes the unused, unexpired code with hash for the caller alone.
// The claim is a delete that must report exactly one deletion: a conditional
// update would do on MongoDB, but FerretDB applies findAndModify and update
// as a read followed by an unconditional write, so two replicas could both
// win; its deletes are single SQL statements and count truthfully.
func (s *Server) claimCode(ctx context.Context, hash string, now time.Time) (*onboardingCodeDoc, *oauthError) {
	// Filters on _id alone: FerretDB looks those up by key, while any other
	// condition scans the collection, which keeps a used record per
	// onboarded device (sign-ups slowed from ~90/s to ~10/s by 1,000
	// devices). A used record has another _id, so the key is unused by
	// construction; expiry is checked here.
	byKey := bson.M{"_id": hash}
	var doc onboardingCodeDoc
	err := s.codes.FindOne(ctx, byKey).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && (doc.DeviceID != "" || !now.Before(doc.ExpiresAt))) {
		return nil, invalidGrant("the code is unknown, expired or already used")
	}
	if err != nil {
		return nil, s.internalError(ctx, "code grant", err)
	}
	res, err := s.codes.DeleteOne(ctx, byKey)
	if err != nil {
		return nil, s.internalError(ctx, "code grant", err)
	}
	if res.DeletedCount != 1 {
		return nil, invalidGrant("the code is unknown, expired or already used")
	}
	return &doc, nil
}

func (s *Server) deviceTokens(ctx context.Context, userID, deviceID string) ([]byte, *oauthError) {
	u, err := s.activeUser(ctx, userID)
	if errors.Is(err, errUnauthenticated) {
		return nil, invalidGrant("the user of this code is disabled or deleted")
	}
	if err != nil {
		return nil, s.internalError(ctx, "code grant", err, "user_id", userID)
	}
	return s.issueJSON(ctx, grant{userID: u.ID, clientID: clientDevice, deviceID: deviceID, refresh: true})
}

// answerCache keeps the answer of each exchanged code until the code expires,
// in memory only, so that tokens are never stored in plaintext. Its entries
// also serialize exchanges of one code within this process, so a retry that
// races the first exchange waits for it and gets its answer.
type answerCache struct {
	mu        sync.Mutex
	entries   map[string]*answerEntry
	lastSweep time.Time
}

type answerEntry struct {
	mu    sync.Mutex // held by the one exchange of this code in progress
	users int        // guarded by answerCache.mu

	// Guarded by mu.
	answer    []byte
	deviceID  string
	expiresAt time.Time
	done      bool // answer is set; read under answerCache.mu by sweep
}

func newAnswerCache() *answerCache {
	return &answerCache{entries: make(map[string]*answerEntry)}
}

// acquire returns the locked entry of hash.
func (c *answerCache) acquire(hash string) *answerEntry {
	c.mu.Lock()
	e := c.entries[hash]
	if e == nil {
		e = &answerEntry{}
		c.entries[hash] = e
	}
	e.users++
	c.mu.Unlock()
	e.mu.Lock()
	return e
}

// release unlocks e and forgets it if it holds no answer and nobody waits.
func (c *answerCache) release(hash string, e *answerEntry) {
	answered := e.answer != nil
	e.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	e.users--
	if answered {
		e.done = true
	}
	if e.users == 0 && !e.done {
		delete(c.entries, hash)
	}
}

// sweep drops answers of expired codes, at most once a second.
func (c *answerCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.lastSweep) < time.Second && !now.Before(c.lastSweep) {
		return
	}
	c.lastSweep = now
	for h, e := range c.entries {
		if e.users == 0 && e.done && !now.Before(e.expiresAt) {
			delete(c.entries, h)
		}
	}
}
