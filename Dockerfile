# Static, non-root refit image.
#   docker build -t refit .
#   docker run --rm -e REFIT_DSN=postgres://... -v $PWD/migrations:/m refit run /m/001.yaml --contract now
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/refit ./cmd/refit

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/refit /usr/local/bin/refit
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/refit"]
