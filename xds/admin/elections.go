package admin

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/xds/elections"
)

// Page size bounds of the contract's SizeParam.
const (
	defaultPageSize = 20
	maxPageSize     = 100
)

func (a *API) listElections(w http.ResponseWriter, r *request) error {
	q := r.URL.Query()
	page, err := intParam(q.Get("page"), 0, 0, 1<<20, "page")
	if err != nil {
		return err
	}
	size, err := intParam(q.Get("size"), defaultPageSize, 1, maxPageSize, "size")
	if err != nil {
		return err
	}
	status := q.Get("status")
	if status != "" && !slices.Contains(contract.Statuses, status) {
		return &elections.Error{Code: contract.CodeInvalidRequest,
			Message: "status must be one of DRAFT, SCHEDULED, ACTIVE, CLOSED, CANCELLED"}
	}
	out, err := a.Elections.List(r.Context(), status, page, size)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func intParam(v string, def, lo, hi int, name string) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, &elections.Error{Code: contract.CodeInvalidRequest, Message: name + " must be an integer from " +
			strconv.Itoa(lo) + " to " + strconv.Itoa(hi)}
	}
	return n, nil
}

func (a *API) createElection(w http.ResponseWriter, r *request) error {
	var f elections.ElectionFields
	if err := decode(r, &f); err != nil {
		return err
	}
	e, err := a.Elections.Create(r.Context(), r.who, f)
	if err != nil {
		return err
	}
	a.Log.Info("election created", "electionId", e.ID, "actor", r.who.Subject, "requestId", r.traceID)
	writeJSON(w, http.StatusCreated, e)
	return nil
}

func (a *API) updateElection(w http.ResponseWriter, r *request) error {
	id, err := pathUUID(r, "electionId", contract.CodeInvalidElectionID)
	if err != nil {
		return err
	}
	var f elections.ElectionFields
	if err := decode(r, &f); err != nil {
		return err
	}
	e, err := a.Elections.Update(r.Context(), r.who, id, f)
	if err != nil {
		return err
	}
	a.Log.Info("election updated", "electionId", id, "status", e.Status, "actor", r.who.Subject, "requestId", r.traceID)
	writeJSON(w, http.StatusOK, e)
	return nil
}

func (a *API) deleteElection(w http.ResponseWriter, r *request) error {
	id, err := pathUUID(r, "electionId", contract.CodeInvalidElectionID)
	if err != nil {
		return err
	}
	if err := a.Elections.Cancel(r.Context(), r.who, id); err != nil {
		return err
	}
	a.Log.Info("election cancelled", "electionId", id, "actor", r.who.Subject, "requestId", r.traceID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) updateElectionStatus(w http.ResponseWriter, r *request) error {
	id, err := pathUUID(r, "electionId", contract.CodeInvalidElectionID)
	if err != nil {
		return err
	}
	var body struct {
		Status *string `json:"status"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Status == nil {
		return &elections.Error{Code: contract.CodeInvalidRequest, Message: "status is required (ACTIVE or CLOSED)"}
	}
	e, err := a.Elections.SetStatus(r.Context(), r.who, id, *body.Status)
	if err != nil {
		return err
	}
	a.Log.Info("election status set", "electionId", id, "status", e.Status, "startDate", e.StartDate, "endDate", e.EndDate,
		"actor", r.who.Subject, "requestId", r.traceID)
	writeJSON(w, http.StatusOK, e)
	return nil
}

func (a *API) addCandidate(w http.ResponseWriter, r *request) error {
	id, err := pathUUID(r, "electionId", contract.CodeInvalidElectionID)
	if err != nil {
		return err
	}
	var f elections.CandidateFields
	if err := decode(r, &f); err != nil {
		return err
	}
	c, err := a.Elections.AddCandidate(r.Context(), r.who, id, f)
	if err != nil {
		return err
	}
	a.Log.Info("candidate added", "electionId", id, "candidateId", c.ID, "actor", r.who.Subject, "requestId", r.traceID)
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (a *API) updateCandidate(w http.ResponseWriter, r *request) error {
	id, err := pathUUID(r, "electionId", contract.CodeInvalidElectionID)
	if err != nil {
		return err
	}
	cid, err := pathUUID(r, "candidateId", contract.CodeInvalidCandidateID)
	if err != nil {
		return err
	}
	var f elections.CandidateFields
	if err := decode(r, &f); err != nil {
		return err
	}
	c, err := a.Elections.UpdateCandidate(r.Context(), r.who, id, cid, f)
	if err != nil {
		return err
	}
	a.Log.Info("candidate updated", "electionId", id, "candidateId", cid, "actor", r.who.Subject, "requestId", r.traceID)
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (a *API) deleteCandidate(w http.ResponseWriter, r *request) error {
	id, err := pathUUID(r, "electionId", contract.CodeInvalidElectionID)
	if err != nil {
		return err
	}
	cid, err := pathUUID(r, "candidateId", contract.CodeInvalidCandidateID)
	if err != nil {
		return err
	}
	if err := a.Elections.DeleteCandidate(r.Context(), r.who, id, cid); err != nil {
		return err
	}
	a.Log.Info("candidate deleted", "electionId", id, "candidateId", cid, "actor", r.who.Subject, "requestId", r.traceID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
