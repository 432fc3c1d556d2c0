package supervisor

import (
	"sync"

	"github.com/keel-run/keel/internal/spec"
)

// Store persists what the supervisor must remember across a daemon restart:
// app definitions, desired state, restart counts and exit history.
// internal/store implements it with bbolt.
type Store interface {
	// SaveApp writes (replaces) one app's record.
	SaveApp(rec AppRecord) error
	// DeleteApp forgets an app.
	DeleteApp(name string) error
	// LoadApps returns every saved app.
	LoadApps() ([]AppRecord, error)
}

// AppRecord is one app as stored.
type AppRecord struct {
	Spec      *spec.App        `json:"spec"`
	Stopped   bool             `json:"stopped"` // desired state
	Instances []InstanceRecord `json:"instances"`
	Exits     []ExitRecord     `json:"exits,omitempty"` // newest last, bounded
}

// InstanceRecord is one instance as stored.
type InstanceRecord struct {
	Instance int        `json:"instance"`
	Restarts int        `json:"restarts"`
	Stopped  bool       `json:"stopped"` // desired: keel must not start it by itself
	Errored  string     `json:"errored,omitempty"`
	LastExit *spec.Exit `json:"last_exit,omitempty"`
}

// ExitRecord is one exit in an app's history.
type ExitRecord struct {
	Instance int       `json:"instance"`
	Pid      int       `json:"pid"`
	Exit     spec.Exit `json:"exit"`
}

// maxExits bounds an app's remembered exit history.
const maxExits = 50

// persister writes records in its own goroutine so the owner loop never
// waits on an fsync. It coalesces: only the latest record of an app is
// written, and a delete wins over earlier saves.
type persister struct {
	store Store
	kick  chan struct{}
	done  chan struct{}
	// mu guards pending and order: the only state shared between the owner
	// loop (which fills it) and the writer goroutine (which drains it).
	mu      sync.Mutex
	pending map[string]*AppRecord // nil value = delete
	order   []string
}

func newPersister(s Store, onErr func(error)) *persister {
	p := &persister{
		store:   s,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		pending: map[string]*AppRecord{},
	}
	go p.loop(onErr)
	return p
}

func (p *persister) put(name string, rec *AppRecord) {
	p.mu.Lock()
	if _, ok := p.pending[name]; !ok {
		p.order = append(p.order, name)
	}
	p.pending[name] = rec
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *persister) loop(onErr func(error)) {
	defer close(p.done)
	for range p.kick {
		p.flush(onErr)
	}
	p.flush(onErr)
}

func (p *persister) flush(onErr func(error)) {
	p.mu.Lock()
	batch, order := p.pending, p.order
	p.pending, p.order = map[string]*AppRecord{}, nil
	p.mu.Unlock()
	for _, name := range order {
		var err error
		if rec := batch[name]; rec == nil {
			err = p.store.DeleteApp(name)
		} else {
			err = p.store.SaveApp(*rec)
		}
		if err != nil {
			onErr(err)
		}
	}
}

// close writes what is pending and stops the writer.
func (p *persister) close() {
	close(p.kick)
	<-p.done
}
