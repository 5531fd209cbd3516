fn main() {
    for (file, crd) in accessplane::api::all_crds() {
        std::fs::write(format!("crds/{file}"), accessplane::api::crd_yaml(&crd)).unwrap();
    }
}
