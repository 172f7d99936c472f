module spectra.lab/images/pause

go 1.21
